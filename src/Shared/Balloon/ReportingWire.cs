using System.Buffers.Binary;
using System.Numerics;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;

namespace Migration.Shared.Balloon;

/// <summary>
/// A free page report as bytes: what the reporting queue's descriptor chain says. virtio's reporting request is a
/// scatter list with one device-writable descriptor per free block, so each entry here is a descriptor's
/// <c>{le64 addr, le64 len}</c> (guest-physical bytes). At most <see cref="Capacity"/> entries per request (Linux's
/// PAGE_REPORTING_CAPACITY, also the size of QEMU's reporting queue).
/// </summary>
public static class ReportingWire
{
    public const int Capacity = 32;
    public const int EntryBytes = 16;

    public static byte[] Encode(IReadOnlyList<long> heads, int order)
    {
        ArgumentNullException.ThrowIfNull(heads);
        var buffer = new byte[heads.Count * EntryBytes];
        long length = (1L << order) << PageGeometry.PageShift;
        for (int i = 0; i < heads.Count; i++)
        {
            var entry = buffer.AsSpan(i * EntryBytes, EntryBytes);
            BinaryPrimitives.WriteInt64LittleEndian(entry, heads[i] << PageGeometry.PageShift);
            BinaryPrimitives.WriteInt64LittleEndian(entry[8..], length);
        }

        return buffer;
    }

    /// <summary>
    /// Parses a report into (head page, order) blocks, checking the framing and every block on its own: inside RAM,
    /// a power-of-two size of at least <paramref name="minOrder"/> and at most <see cref="GuestKernel.MaxOrder"/>,
    /// aligned to its size, no two overlapping. Returns null and the first problem on error.
    /// </summary>
    public static List<(long Pfn, int Order)>? Decode(ReadOnlySpan<byte> buffer, long ramPages, int minOrder,
        out string? problem)
    {
        problem = null;
        if (buffer.Length == 0 || buffer.Length % EntryBytes != 0)
        {
            problem = $"a report of {buffer.Length} bytes (entries are {EntryBytes} bytes, at least one)";
            return null;
        }

        int count = buffer.Length / EntryBytes;
        if (count > Capacity)
        {
            problem = $"a report of {count} blocks (the reporting queue holds {Capacity})";
            return null;
        }

        var blocks = new List<(long Pfn, int Order)>(count);
        for (int i = 0; i < count; i++)
        {
            var entry = buffer.Slice(i * EntryBytes, EntryBytes);
            long addr = BinaryPrimitives.ReadInt64LittleEndian(entry);
            long len = BinaryPrimitives.ReadInt64LittleEndian(entry[8..]);
            if (len <= 0 || (len & (PageGeometry.PageSize - 1)) != 0 || !BitOperations.IsPow2(len))
            {
                problem = $"block {i}: a length of {len} bytes (a power-of-two number of pages)";
                return null;
            }

            long pages = len >> PageGeometry.PageShift;
            int order = BitOperations.Log2((ulong)pages);
            if (order < minOrder || order > GuestKernel.MaxOrder)
            {
                problem = $"block {i}: order {order}; reports carry orders {minOrder}..{GuestKernel.MaxOrder}";
                return null;
            }

            if (addr < 0 || (addr & (len - 1)) != 0)
            {
                problem = $"block {i}: address 0x{addr:x} is not aligned to its {len} bytes";
                return null;
            }

            long pfn = addr >> PageGeometry.PageShift;
            if (pfn > ramPages - pages)
            {
                problem = $"block {i}: pages {pfn}..{pfn + pages - 1} are outside guest RAM ({ramPages} pages)";
                return null;
            }

            blocks.Add((pfn, order));
        }

        blocks.Sort((a, b) => a.Pfn.CompareTo(b.Pfn));
        for (int i = 1; i < blocks.Count; i++)
        {
            var (prev, prevOrder) = blocks[i - 1];
            if (blocks[i].Pfn < prev + (1L << prevOrder))
            {
                problem = $"pages from {blocks[i].Pfn} are named twice in one report";
                return null;
            }
        }

        return blocks;
    }
}
