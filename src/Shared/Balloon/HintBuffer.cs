namespace Migration.Shared.Balloon;

public enum HintBufferKind
{
    /// <summary>A command-id buffer: START(id) when it echoes the current id, otherwise it means STOP.</summary>
    CommandId,

    /// <summary>One free block the guest hands over, tagged with the id of the run that found it.</summary>
    FreeBlock,
}

/// <summary>
/// One buffer on the free-page virtqueue. <see cref="Length"/> is the byte length of a command-id buffer (it must be
/// 4); <see cref="Pfn"/> and <see cref="Pages"/> describe a free block.
/// </summary>
public readonly record struct HintBuffer(HintBufferKind Kind, uint CommandId, long Pfn = 0, long Pages = 0,
    int Length = 4)
{
    public static HintBuffer Id(uint id) => new(HintBufferKind.CommandId, id);

    public static HintBuffer Block(uint id, long pfn, long pages) => new(HintBufferKind.FreeBlock, id, pfn, pages, 0);
}
