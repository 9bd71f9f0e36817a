namespace Migration.Shared.Guest.Kernel;

/// <summary>A snapshot of the in-RAM kernel's counters (<see cref="GuestKernel.Counters"/>), in pages and events.</summary>
public sealed record KernelCounters
{
    public long FreePages { get; init; }

    public long ManagedPages { get; init; }

    /// <summary>Pages allocated as page cache (file data: reclaimable).</summary>
    public long PageCachePages { get; init; }

    /// <summary>Pages in the balloon (inflated: the host's, not the guest's).</summary>
    public long InflatedPages { get; init; }

    /// <summary>Free pages the hint driver holds while it hints them.</summary>
    public long HintHeldPages { get; init; }

    /// <summary>Pages allocated for workload data since boot: each is a first-touch (minor) fault.</summary>
    public long FaultedPages { get; init; }

    /// <summary>Allocations that had to reclaim before they could be served (Linux's allocstall).</summary>
    public long AllocStalls { get; init; }

    /// <summary>Pages the allocation slow path reclaimed itself (direct reclaim: every page scanned is reclaimed).</summary>
    public long DirectReclaimedPages { get; init; }

    /// <summary>Allocations that failed after the shrinker and the OOM notifiers (where Linux kills a task).</summary>
    public long OomKills { get; init; }
}
