namespace Migration.Shared.Guest.Workloads;

public enum WorkloadKind
{
    /// <summary>Kernel and page cache take about 5% of RAM; the rest is free and never touched.</summary>
    Idle,

    /// <summary>
    /// Page cache as idle, then fill a share of RAM, free it all (stale data left in free pages), then idle.
    /// </summary>
    Memhog,

    /// <summary>
    /// Processes allocate a working set, write it at a target dirty rate with a hot set, and exit and restart.
    /// </summary>
    Busy,

    /// <summary>Allocate, write and free as fast as possible, reusing just-freed blocks: the race stressor.</summary>
    Churn,

    /// <summary>
    /// QEMU's migration test: increment byte 0 of every page of a reserved range at 1 MiB, in order, forever.
    /// </summary>
    Ab,

    /// <summary>
    /// will-it-scale's page_fault1 with huge pages: each vCPU maps a region, writes all of it, unmaps it, again.
    /// </summary>
    PageFault,
}

/// <summary>
/// Workload parameters. Every run is reproducible from <see cref="Seed"/>: each vCPU's stream derives from it.
/// </summary>
public sealed record WorkloadOptions
{
    public WorkloadKind Kind { get; init; } = WorkloadKind.Idle;

    public ulong Seed { get; init; } = 1;

    /// <summary>
    /// Share of RAM the kernel's own data and the page cache occupy (idle and memhog). About 5% as in an idle Linux
    /// guest.
    /// </summary>
    public double PageCacheShare { get; init; } = 0.05;

    /// <summary>Pages per second an idle guest still writes (timers, logs, page cache updates).</summary>
    public double IdleDirtyPagesPerSecond { get; init; } = 64;

    /// <summary>Share of RAM memhog fills before it frees it again.</summary>
    public double MemhogShare { get; init; } = 0.9;

    /// <summary>Buddy order of memhog's allocations (9 = 2 MiB, like transparent huge pages).</summary>
    public int MemhogOrder { get; init; } = 9;

    /// <summary>Busy: page writes per second over all vCPUs (25600 = 100 MiB/s).</summary>
    public double BusyDirtyPagesPerSecond { get; init; } = 25600;

    /// <summary>Busy: share of RAM the processes keep allocated.</summary>
    public double BusyWorkingSetShare { get; init; } = 0.25;

    /// <summary>Busy: share of the working set that is hot.</summary>
    public double BusyHotSetShare { get; init; } = 0.1;

    /// <summary>Busy: share of writes that go to the hot set.</summary>
    public double BusyHotWriteShare { get; init; } = 0.9;

    /// <summary>
    /// Busy: share of RAM earlier jobs filled and freed before the steady load (a build that has been running for a
    /// while leaves stale data in free memory). 0 = free memory was never touched.
    /// </summary>
    public double BusyStaleShare { get; init; }

    /// <summary>
    /// Busy: chance per step that a process exits (frees a block) and another starts (allocates one).
    /// </summary>
    public double BusyExitChance { get; init; } = 1.0 / 256;

    /// <summary>Churn: blocks each vCPU holds before it frees one.</summary>
    public int ChurnHeldBlocks { get; init; } = 64;

    /// <summary>
    /// Churn: largest block order it allocates (0..10). Small orders keep to the small free lists; up to 10 it also
    /// takes whole 4 MiB blocks, which is what reuses a block the balloon just gave back.
    /// </summary>
    public int ChurnMaxOrder { get; init; } = 2;

    /// <summary>Churn: page writes per second per VM; 0 = as fast as the vCPU runs.</summary>
    public double ChurnPagesPerSecond { get; init; }

    /// <summary>PageFault: MiB each vCPU maps, writes and unmaps per loop (page_fault1 uses 128 MiB).</summary>
    public int PageFaultRegionMib { get; init; } = 128;

    /// <summary>PageFault: buddy order of one fault (9 = 2 MiB, a transparent huge page).</summary>
    public int PageFaultOrder { get; init; } = 9;

    /// <summary>PageFault: blocks per region.</summary>
    public int PageFaultBlocks =>
        (int)Math.Max(1, ((long)PageFaultRegionMib << (20 - PageGeometry.PageShift)) >> PageFaultOrder);

    /// <summary>Ab: MiB reserved at guest-physical 1 MiB and incremented.</summary>
    public int AbMib { get; init; } = 64;

    /// <summary>Guest-physical start of the ab range: 1 MiB, as QEMU's migration test uses.</summary>
    public const long AbStartBytes = 1L << 20;

    public static long AbFirstPfn => AbStartBytes >> PageGeometry.PageShift;

    public long AbPages => (long)AbMib << (20 - PageGeometry.PageShift);

    /// <summary>
    /// Checks the options against a guest of <paramref name="ramBytes"/>; throws with a message naming the option.
    /// </summary>
    public void Validate(long ramBytes)
    {
        static void Share(double v, string name)
        {
            if (!(v >= 0 && v <= 1))
            {
                throw new ArgumentOutOfRangeException(name, v, $"{name} must be a share between 0 and 1.");
            }
        }

        static void NonNegative(double v, string name)
        {
            if (!(v >= 0) || double.IsInfinity(v))
            {
                throw new ArgumentOutOfRangeException(name, v, $"{name} must be a finite number >= 0.");
            }
        }

        if (!Enum.IsDefined(Kind))
        {
            throw new ArgumentException($"Unknown workload kind {(int)Kind}.");
        }

        Share(PageCacheShare, nameof(PageCacheShare));
        Share(MemhogShare, nameof(MemhogShare));
        Share(BusyStaleShare, nameof(BusyStaleShare));
        Share(BusyWorkingSetShare, nameof(BusyWorkingSetShare));
        Share(BusyHotSetShare, nameof(BusyHotSetShare));
        Share(BusyHotWriteShare, nameof(BusyHotWriteShare));
        Share(BusyExitChance, nameof(BusyExitChance));
        NonNegative(IdleDirtyPagesPerSecond, nameof(IdleDirtyPagesPerSecond));
        NonNegative(BusyDirtyPagesPerSecond, nameof(BusyDirtyPagesPerSecond));
        NonNegative(ChurnPagesPerSecond, nameof(ChurnPagesPerSecond));
        if (MemhogOrder is < 0 or > Kernel.GuestKernel.MaxOrder)
        {
            throw new ArgumentException($"MemhogOrder must be 0..{Kernel.GuestKernel.MaxOrder}.");
        }

        if (ChurnMaxOrder is < 0 or > 10)
        {
            throw new ArgumentException($"ChurnMaxOrder must be 0..10, got {ChurnMaxOrder}.");
        }

        if (ChurnHeldBlocks is < 1 or > 1 << 20)
        {
            throw new ArgumentException("ChurnHeldBlocks must be 1..1048576.");
        }

        if (PageFaultOrder is < 0 or > Kernel.GuestKernel.MaxOrder)
        {
            throw new ArgumentException($"PageFaultOrder must be 0..{Kernel.GuestKernel.MaxOrder}.");
        }

        bool regionFits = PageFaultRegionMib >= 1 && (long)PageFaultRegionMib << 20 <= ramBytes / 2;
        if (Kind == WorkloadKind.PageFault && !regionFits)
        {
            throw new ArgumentException(
                $"The page-fault region of {PageFaultRegionMib} MiB must be at least 1 MiB " +
                $"and fit in half of the guest's {ramBytes >> 20} MiB.");
        }

        if (Kind == WorkloadKind.Ab && (AbMib < 1 || AbStartBytes + ((long)AbMib << 20) > ramBytes / 2))
        {
            throw new ArgumentException(
                $"The ab range [1 MiB, 1 MiB + {AbMib} MiB) must be at least 1 MiB " +
                $"and fit in half of the guest's {ramBytes >> 20} MiB.");
        }
    }
}
