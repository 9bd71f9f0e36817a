using Migration.Shared.Balloon;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Guest;

namespace Migration.Shared.Machine;

/// <summary>Everything needed to boot a guest, and everything a target needs to host it.</summary>
public sealed record GuestConfig
{
    /// <summary>Guest RAM; 1 GiB unless set (the CLI's default too).</summary>
    public long RamBytes { get; init; } = 1L << 30;

    public int Vcpus { get; init; } = 2;

    public WorkloadOptions Workload { get; init; } = new();

    /// <summary>Page poisoning: the byte freed pages are filled with, or null for off.</summary>
    public byte? PoisonValue { get; init; }

    /// <summary>The kernel zeroes every block it allocates (Linux's <c>init_on_alloc=1</c>, Debian's default).</summary>
    public bool InitOnAlloc { get; init; }

    public DirtyLogMode DirtyLogMode { get; init; } = DirtyLogMode.Eager;

    /// <summary>
    /// The balloon driver's wait-on-ack feature (H8): a hinted block is not reused before the device used its buffer.
    /// On by default; without it manual dirty-log mode can lose a write (race R5).
    /// </summary>
    public bool WaitOnAck { get; init; } = true;

    /// <summary>Order of the free blocks the balloon driver hints (Linux on x86: 10, 4 MiB).</summary>
    public int HintBlockOrder { get; init; } = BalloonDriver.DefaultBlockOrder;

    /// <summary>The balloon's inflate/deflate features: encoding, deflate-on-OOM, MUST_TELL_HOST, events.</summary>
    public BalloonOptions Balloon { get; init; } = new();

    /// <summary>Manual mode's clear granularity in pages (QEMU: 1 GiB).</summary>
    public long ClearChunkPages { get; init; } = DirtyLog.DefaultClearChunkPages;

    public const int MaxVcpus = 64;

    public long PageCount => RamBytes >> PageGeometry.PageShift;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        PageGeometry.ValidateRamBytes(RamBytes);
        if (!Enum.IsDefined(DirtyLogMode))
        {
            throw new ArgumentException($"Unknown dirty-log mode {(int)DirtyLogMode}.");
        }

        if (ClearChunkPages <= 0 || (ClearChunkPages & 63) != 0)
        {
            throw new ArgumentException($"ClearChunkPages must be a positive multiple of 64; got {ClearChunkPages}.");
        }

        if (Vcpus is < 1 or > MaxVcpus)
        {
            throw new ArgumentException($"A guest has 1..{MaxVcpus} vCPUs; got {Vcpus}.");
        }

        if (HintBlockOrder is < 0 or > 10)
        {
            throw new ArgumentException($"HintBlockOrder must be 0..10; got {HintBlockOrder}.");
        }

        if (Workload is null)
        {
            throw new ArgumentException("The workload is missing.");
        }

        Workload.Validate(RamBytes);
        if (Balloon is null)
        {
            throw new ArgumentException("The balloon options are missing.");
        }

        Balloon.Validate();
    }
}
