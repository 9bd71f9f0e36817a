namespace Migration.Shared.Balloon;

/// <summary>
/// virtio-balloon feature bits, with the spec's numbers where the spec has one. Bits of our own sit at 50 or above,
/// where the spec leaves device-specific bits free, so they can never collide with a future standard bit.
/// </summary>
public static class BalloonFeatureBits
{
    /// <summary>VIRTIO_BALLOON_F_FREE_PAGE_HINT (bit 3).</summary>
    public const ulong FreePageHint = 1UL << 3;

    /// <summary>VIRTIO_BALLOON_F_PAGE_POISON (bit 4): the guest poisons free pages with <c>poison_val</c>.</summary>
    public const ulong PagePoison = 1UL << 4;

    /// <summary>
    /// The 2026 wait-on-ack proposal (bit 6): no reuse of a hinted block before the device used its buffer.
    /// </summary>
    public const ulong HintWaitOnAck = 1UL << 6;
}
