using System.Buffers.Binary;
using Migration.Shared.Guest.Kernel;

namespace Migration.Shared.Balloon;

/// <summary>
/// The statistics queue's tags: 0-9 from the spec, 10-15 added by Linux 6.12 (not in the spec yet).
/// <see cref="BalloonStats.Count"/> is Linux's VIRTIO_BALLOON_S_NR.
/// </summary>
public enum BalloonStatTag : ushort
{
    SwapIn = 0,
    SwapOut = 1,
    MajorFaults = 2,
    MinorFaults = 3,
    FreeMemory = 4,
    TotalMemory = 5,
    AvailableMemory = 6,
    DiskCaches = 7,
    HugetlbAllocations = 8,
    HugetlbFailures = 9,
    OomKills = 10,
    AllocStalls = 11,
    AsyncScans = 12,
    DirectScans = 13,
    AsyncReclaims = 14,
    DirectReclaims = 15,
}

/// <summary>
/// The statistics queue's wire format and its two ends. An entry is 10 packed bytes, le16 tag then le64 value; a buffer
/// is a whole number of entries. The guest sends the same set of tags every time; the device ignores tags it does not
/// know (the spec's rule) and reports what it did not receive as -1 (QEMU's).
/// </summary>
public static class BalloonStats
{
    public const int EntryBytes = 10;

    /// <summary>Tags the device knows (Linux's VIRTIO_BALLOON_S_NR).</summary>
    public const int Count = 16;

    /// <summary>Largest buffer the device accepts: a few times what a guest sends, so a rogue one cannot flood it.</summary>
    public const int MaxBytes = 64 * EntryBytes;

    /// <summary>QEMU's <c>guest-stats</c> key of each tag, in tag order.</summary>
    public static IReadOnlyList<string> QemuKeys { get; } =
    [
        "stat-swap-in", "stat-swap-out", "stat-major-faults", "stat-minor-faults", "stat-free-memory",
        "stat-total-memory", "stat-available-memory", "stat-disk-caches", "stat-htlb-pgalloc", "stat-htlb-pgfail",
        "stat-oom-kills", "stat-alloc-stalls", "stat-async-scans", "stat-direct-scans", "stat-async-reclaims",
        "stat-direct-reclaims",
    ];

    /// <summary>Packs entries into one buffer.</summary>
    public static byte[] Encode(IReadOnlyList<(ushort Tag, ulong Value)> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        var buffer = new byte[entries.Count * EntryBytes];
        for (int i = 0; i < entries.Count; i++)
        {
            var span = buffer.AsSpan(i * EntryBytes, EntryBytes);
            BinaryPrimitives.WriteUInt16LittleEndian(span, entries[i].Tag);
            BinaryPrimitives.WriteUInt64LittleEndian(span[2..], entries[i].Value);
        }

        return buffer;
    }

    /// <summary>
    /// The values a buffer carries, by tag (-1 where it carried nothing; unknown tags ignored), or null with the
    /// problem for a buffer that is not a whole number of entries or is too long.
    /// </summary>
    public static long[]? Decode(ReadOnlySpan<byte> buffer, out string? problem)
    {
        if (buffer.Length % EntryBytes != 0 || buffer.Length > MaxBytes)
        {
            problem = $"stats: a buffer of {buffer.Length} bytes is not a whole number of {EntryBytes}-byte entries " +
                $"of at most {MaxBytes} bytes";
            return null;
        }

        var values = new long[Count];
        Array.Fill(values, -1);
        for (int at = 0; at < buffer.Length; at += EntryBytes)
        {
            ushort tag = BinaryPrimitives.ReadUInt16LittleEndian(buffer[at..]);
            ulong value = BinaryPrimitives.ReadUInt64LittleEndian(buffer[(at + 2)..]);
            if (tag < Count)
            {
                values[tag] = value > long.MaxValue ? long.MaxValue : (long)value;
            }
        }

        problem = null;
        return values;
    }

    /// <summary>
    /// What the guest's driver sends, all sixteen tags from the in-RAM kernel's counters (Linux's
    /// update_balloon_stats). No swap, no disk and no huge pages here, so those are a true 0; the kernel has no
    /// background reclaim (kswapd), so the async counters are 0 too. Available memory is Linux's estimate shape: free
    /// pages plus the page cache that could be dropped, less half of it kept as the working set.
    /// </summary>
    public static byte[] FromKernel(KernelCounters c, bool inflatedLeaveTotal)
    {
        ArgumentNullException.ThrowIfNull(c);
        const ulong Page = 4096;
        // Linux lowers totalram by each inflated page unless deflate-on-OOM may give it back.
        long total = c.ManagedPages - (inflatedLeaveTotal ? 0 : c.InflatedPages);
        long available = c.FreePages + c.HintHeldPages + (c.PageCachePages - (c.PageCachePages / 2));
        return Encode(
        [
            ((ushort)BalloonStatTag.SwapIn, 0),
            ((ushort)BalloonStatTag.SwapOut, 0),
            ((ushort)BalloonStatTag.MajorFaults, 0),
            ((ushort)BalloonStatTag.MinorFaults, (ulong)c.FaultedPages),
            ((ushort)BalloonStatTag.FreeMemory, (ulong)(c.FreePages + c.HintHeldPages) * Page),
            ((ushort)BalloonStatTag.TotalMemory, (ulong)total * Page),
            ((ushort)BalloonStatTag.AvailableMemory, (ulong)available * Page),
            ((ushort)BalloonStatTag.DiskCaches, (ulong)c.PageCachePages * Page),
            ((ushort)BalloonStatTag.HugetlbAllocations, 0),
            ((ushort)BalloonStatTag.HugetlbFailures, 0),
            ((ushort)BalloonStatTag.OomKills, (ulong)c.OomKills),
            ((ushort)BalloonStatTag.AllocStalls, (ulong)c.AllocStalls),
            ((ushort)BalloonStatTag.AsyncScans, 0),
            ((ushort)BalloonStatTag.DirectScans, (ulong)c.DirectReclaimedPages),
            ((ushort)BalloonStatTag.AsyncReclaims, 0),
            ((ushort)BalloonStatTag.DirectReclaims, (ulong)c.DirectReclaimedPages),
        ]);
    }
}

/// <summary>The device's latest statistics, as QEMU's <c>guest-stats</c> gives them.</summary>
public sealed record GuestStats
{
    /// <summary>Host wall time of the last report, in seconds since the epoch; 0 until the first.</summary>
    public long LastUpdate { get; init; }

    /// <summary>By tag; -1 for what the guest did not report.</summary>
    public IReadOnlyList<long> Values { get; init; } = Enumerable.Repeat(-1L, BalloonStats.Count).ToArray();

    /// <summary>Reports received since the device started.</summary>
    public long Reports { get; init; }

    /// <summary>Seconds between the device's requests; 0 when it does not poll.</summary>
    public int PollingIntervalSeconds { get; init; }

    public long this[BalloonStatTag tag] => Values[(int)tag];
}
