using System.Buffers.Binary;

namespace Migration.Shared.Guest.Kernel;

/// <summary>
/// The guest kernel's descriptor array as it was at one moment (<see cref="GuestKernel.SnapshotDescriptors"/>), kept
/// outside guest RAM: what the guest's own allocator said was free, even after the guest ran on and changed it.
/// </summary>
/// <remarks>Held in chunks, so a guest of any size (16 bytes a page: 4 GiB of descriptors for 1 TiB) fits.</remarks>
public sealed class DescriptorSnapshot
{
    private const int ChunkShift = 26; // 64 MiB: 4 Mi descriptors a chunk
    private readonly byte[][] _chunks;

    private DescriptorSnapshot(byte[][] chunks, long pageCount)
    {
        _chunks = chunks;
        PageCount = pageCount;
    }

    public long PageCount { get; }

    internal static DescriptorSnapshot Copy(GuestRam ram, KernelLayout layout)
    {
        long bytes = layout.PageCount * PageDescriptor.Size;
        var chunks = new byte[(int)((bytes + (1L << ChunkShift) - 1) >> ChunkShift)][];
        for (int i = 0; i < chunks.Length; i++)
        {
            long offset = (long)i << ChunkShift; // a whole number of pages
            var chunk = GC.AllocateUninitializedArray<byte>((int)Math.Min(1L << ChunkShift, bytes - offset));
            int pages = (chunk.Length + PageGeometry.PageSize - 1) >> PageGeometry.PageShift;
            ram.Pages(layout.DescriptorFirstPfn + (offset >> PageGeometry.PageShift), pages)[..chunk.Length]
                .CopyTo(chunk);
            chunks[i] = chunk;
        }

        return new DescriptorSnapshot(chunks, layout.PageCount);
    }

    /// <summary>The free-page map the kernel's <see cref="GuestKernel.FreePageMap"/> gave at the time of the copy.</summary>
    public DirtyTracking.PageBitmap FreePageMap() => GuestKernel.FreePageMapOf(PageCount, Read);

    private PageDescriptor Read(long pfn)
    {
        long offset = pfn * PageDescriptor.Size;
        var chunk = _chunks[(int)(offset >> ChunkShift)].AsSpan((int)(offset & ((1L << ChunkShift) - 1)));
        return PageDescriptor.Decode(BinaryPrimitives.ReadUInt64LittleEndian(chunk),
            BinaryPrimitives.ReadUInt64LittleEndian(chunk[8..]));
    }
}
