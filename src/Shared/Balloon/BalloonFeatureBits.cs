namespace Migration.Shared.Balloon;

/// <summary>
/// virtio-balloon feature bits, with the spec's numbers where the spec has one. Bits of our own sit at 50 or above,
/// where the spec leaves device-specific bits free, so they can never collide with a future standard bit (every
/// unmerged balloon proposal lost its low bit to a later standard feature).
/// </summary>
public static class BalloonFeatureBits
{
    /// <summary>VIRTIO_BALLOON_F_MUST_TELL_HOST (bit 0): the driver reuses a deflated page only after the ack.</summary>
    public const ulong MustTellHost = 1UL << 0;

    /// <summary>VIRTIO_BALLOON_F_STATS_VQ (bit 1): the memory statistics queue.</summary>
    public const ulong StatsQueue = 1UL << 1;

    /// <summary>VIRTIO_BALLOON_F_DEFLATE_ON_OOM (bit 2): the guest may take pages back under memory pressure.</summary>
    public const ulong DeflateOnOom = 1UL << 2;

    /// <summary>VIRTIO_BALLOON_F_FREE_PAGE_HINT (bit 3).</summary>
    public const ulong FreePageHint = 1UL << 3;

    /// <summary>VIRTIO_BALLOON_F_PAGE_POISON (bit 4): the guest poisons free pages with <c>poison_val</c>.</summary>
    public const ulong PagePoison = 1UL << 4;

    /// <summary>VIRTIO_BALLOON_F_REPORTING (bit 5): free page reporting.</summary>
    public const ulong PageReporting = 1UL << 5;

    /// <summary>
    /// The 2026 wait-on-ack proposal (bit 6): no reuse of a hinted block before the device used its buffer.
    /// </summary>
    public const ulong HintWaitOnAck = 1UL << 6;

    /// <summary>
    /// Ours: inflate and deflate buffers are Liang Li's page bitmaps (2016 v3, his F_PAGE_BITMAP), not PFN arrays.
    /// </summary>
    public const ulong PageBitmap = 1UL << 50;

    /// <summary>Ours: inflate and deflate buffers are Wei Wang's chunk lists (2017 v9, his F_BALLOON_CHUNKS).</summary>
    public const ulong PageChunks = 1UL << 51;

    /// <summary>
    /// Ours: a guest-to-host events queue carrying PRESSURE (with a level) and PUFF_FAILURE, in the spirit of the 2014
    /// pressure-message proposal and crosvm's events queue.
    /// </summary>
    public const ulong EventsQueue = 1UL << 52;

    /// <summary>Every bit this device knows (a migrated state must match the negotiated bits exactly).</summary>
    public const ulong Known = MustTellHost | StatsQueue | DeflateOnOom | FreePageHint | PagePoison | PageReporting
        | HintWaitOnAck | PageBitmap | PageChunks | EventsQueue;

    public static bool Has(ulong features, ulong bit) => (features & bit) == bit;
}
