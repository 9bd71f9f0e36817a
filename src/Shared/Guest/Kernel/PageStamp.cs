namespace Migration.Shared.Guest.Kernel;

/// <summary>
/// The identity a workload writes into each page it owns: which page it is and which allocation (generation) of that
/// page wrote it. A page that arrived at the wrong place, or a stale copy from an earlier allocation, fails the check.
/// </summary>
/// <remarks>
/// Lives at bytes 8..23 of the page. Bytes 0..7 stay free for per-page counters (QEMU's migration test increments
/// byte 0 of every page, so check data never goes there).
/// </remarks>
public readonly record struct PageStamp(uint Magic, uint Generation, ulong Pfn)
{
    public const int Offset = 8;
    public const int Size = 16;

    /// <summary>First byte after the stamp: where workload data starts.</summary>
    public const int DataOffset = Offset + Size;

    /// <summary>"STMP" little-endian.</summary>
    public const uint ExpectedMagic = 0x504D5453;

    public static void Write(GuestMemory memory, long pfn, uint generation)
    {
        long gpa = (pfn << PageGeometry.PageShift) + Offset;
        // One 16-byte span write so the page is marked once, after both halves are stored.
        Span<byte> bytes = stackalloc byte[Size];
        BitConverter.TryWriteBytes(bytes, ExpectedMagic);
        BitConverter.TryWriteBytes(bytes[4..], generation);
        BitConverter.TryWriteBytes(bytes[8..], (ulong)pfn);
        memory.Write(gpa, bytes);
    }

    public static PageStamp Read(GuestMemory memory, long pfn)
    {
        long gpa = (pfn << PageGeometry.PageShift) + Offset;
        return new PageStamp(memory.ReadUInt32(gpa), memory.ReadUInt32(gpa + 4), memory.ReadUInt64(gpa + 8));
    }

    public bool Matches(long pfn, uint generation) =>
        Magic == ExpectedMagic && Pfn == (ulong)pfn && Generation == generation;
}
