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

    /// <summary>
    /// Room for the descriptors of a guest of <paramref name="pageCount"/> pages, every page of it touched, so that a
    /// copy into it later is a plain memory copy (no allocation, no page faults): a target makes it while the pages
    /// arrive and fills it inside the downtime.
    /// </summary>
    public static DescriptorSnapshot Allocate(long pageCount)
    {
        long bytes = pageCount * PageDescriptor.Size;
        var chunks = new byte[(int)((bytes + (1L << ChunkShift) - 1) >> ChunkShift)][];
        for (int i = 0; i < chunks.Length; i++)
        {
            long length = Math.Min(1L << ChunkShift, bytes - ((long)i << ChunkShift));
            chunks[i] = GC.AllocateUninitializedArray<byte>((int)length);
            chunks[i].AsSpan().Clear(); // touched now, so the copy later faults nothing in
        }

        return new DescriptorSnapshot(chunks, pageCount);
    }

    /// <summary>
    /// Copies as many bytes as this snapshot holds from <paramref name="ram"/>, starting at page
    /// <paramref name="firstPfn"/>: the descriptor array when the kernel copies it; for a rehearsal, any RAM of the
    /// same size, to time the copy.
    /// </summary>
    public void CopyFrom(GuestRam ram, long firstPfn)
    {
        ArgumentNullException.ThrowIfNull(ram);
        for (int i = 0; i < _chunks.Length; i++)
        {
            var chunk = _chunks[i];
            int pages = (chunk.Length + PageGeometry.PageSize - 1) >> PageGeometry.PageShift;
            long pfn = firstPfn + ((long)i << (ChunkShift - PageGeometry.PageShift)); // chunks are whole pages
            pages = (int)Math.Min(pages, ram.PageCount - pfn);
            int length = Math.Min(chunk.Length, pages << PageGeometry.PageShift);
            ram.Pages(pfn, pages)[..length].CopyTo(chunk);
        }
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
