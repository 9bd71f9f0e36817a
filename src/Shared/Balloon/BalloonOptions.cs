using System.Text.Json.Serialization;

namespace Migration.Shared.Balloon;

/// <summary>How inflate and deflate buffers describe pages (one per negotiated feature).</summary>
public enum BalloonEncoding
{
    /// <summary>The spec's arrays of at most 256 le32 page numbers per buffer: what every guest speaks.</summary>
    PageNumbers,

    /// <summary>Liang Li's bitmap: a 32-byte header (start page, length) and bitmaps of 32 KiB per GiB.</summary>
    Bitmap,

    /// <summary>Wei Wang's chunks: a le32 count and up to 4090 (le64 base, le64 size) pairs per buffer.</summary>
    Chunks,
}

/// <summary>
/// The balloon features this guest's device and driver agree on (inflate and deflate; hinting has its own settings in
/// the machine's <c>GuestConfig</c>). Part of the guest configuration, so the target's device negotiates the same.
/// </summary>
public sealed record BalloonOptions
{
    public BalloonEncoding Encoding { get; init; } = BalloonEncoding.PageNumbers;

    /// <summary>VIRTIO_BALLOON_F_DEFLATE_ON_OOM: the guest takes 1 MiB back per failed allocation.</summary>
    public bool DeflateOnOom { get; init; } = true;

    /// <summary>
    /// VIRTIO_BALLOON_F_MUST_TELL_HOST: a deflated page is reused only after the device acknowledged it. Off by default,
    /// as QEMU does not offer it; our driver then reuses deflated pages as soon as it queued the buffer (the spec
    /// allows it), which the device must survive.
    /// </summary>
    public bool MustTellHost { get; init; }

    /// <summary>Our events queue (PRESSURE, PUFF_FAILURE); on by default.</summary>
    public bool Events { get; init; } = true;

    /// <summary>VIRTIO_BALLOON_F_STATS_VQ: the memory statistics queue; on by default, as QEMU and Linux have it.</summary>
    public bool Stats { get; init; } = true;

    /// <summary>
    /// VIRTIO_BALLOON_F_REPORTING: free page reporting (the guest reports free blocks, the host discards them). Off by
    /// default, as QEMU's <c>free-page-reporting</c> is.
    /// </summary>
    public bool Reporting { get; init; }

    /// <summary>Smallest block reported, as a buddy order: Linux's <c>page_reporting_order</c>, 9 (2 MiB) on x86.</summary>
    public int ReportingOrder { get; init; } = DefaultReportingOrder;

    /// <summary>
    /// How long the driver waits after a free of a reportable block before a pass (Linux: 2 s), in milliseconds; it
    /// lets frees accumulate so a pass reports many blocks at once.
    /// </summary>
    public int ReportingDelayMs { get; init; } = 2000;

    /// <summary>
    /// A pass reports about 1/N of each free list (Linux: 16), so a busy guest is never held up reporting everything
    /// at once. 1 reports every free block in one pass: a test or a benchmark can report a whole guest in seconds.
    /// </summary>
    public int ReportingBudgetDivisor { get; init; } = 16;

    public const int DefaultReportingOrder = 9;

    /// <summary>The feature bits these options negotiate.</summary>
    [JsonIgnore]
    public ulong Features =>
        (DeflateOnOom ? BalloonFeatureBits.DeflateOnOom : 0)
        | (Reporting ? BalloonFeatureBits.PageReporting : 0)
        | (MustTellHost ? BalloonFeatureBits.MustTellHost : 0)
        | (Events ? BalloonFeatureBits.EventsQueue : 0)
        | (Stats ? BalloonFeatureBits.StatsQueue : 0)
        | Encoding switch
        {
            BalloonEncoding.Bitmap => BalloonFeatureBits.PageBitmap,
            BalloonEncoding.Chunks => BalloonFeatureBits.PageChunks,
            _ => 0UL,
        };

    public void Validate()
    {
        if (!Enum.IsDefined(Encoding))
        {
            throw new ArgumentException($"Unknown balloon encoding {(int)Encoding}.");
        }

        if (ReportingOrder is < 0 or > Guest.Kernel.GuestKernel.MaxOrder)
        {
            throw new ArgumentException(
                $"The reporting order must be 0..{Guest.Kernel.GuestKernel.MaxOrder}; got {ReportingOrder}.");
        }

        if (ReportingDelayMs is < 0 or > 600_000)
        {
            throw new ArgumentException($"The reporting delay must be 0..600000 ms; got {ReportingDelayMs}.");
        }

        if (ReportingBudgetDivisor is < 1 or > 1024)
        {
            throw new ArgumentException($"The reporting budget divisor must be 1..1024; got {ReportingBudgetDivisor}.");
        }
    }

    /// <summary>The encoding <paramref name="features"/> negotiate (chunks win if a rogue state names both).</summary>
    public static BalloonEncoding EncodingOf(ulong features) =>
        BalloonFeatureBits.Has(features, BalloonFeatureBits.PageChunks) ? BalloonEncoding.Chunks
        : BalloonFeatureBits.Has(features, BalloonFeatureBits.PageBitmap) ? BalloonEncoding.Bitmap
        : BalloonEncoding.PageNumbers;
}
