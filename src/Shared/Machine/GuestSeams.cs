using Migration.Shared.Balloon;
using Migration.Shared.Concurrency;
using Migration.Shared.Guest;

namespace Migration.Shared.Machine;

/// <summary>
/// How the race fuzzer drives and breaks a guest. Production uses <see cref="Production"/>: real threads, no
/// scheduling points, the correct defences. The fuzzer swaps in its scheduler and one mutant's seam at a time.
/// </summary>
internal sealed record GuestSeams
{
    public static readonly GuestSeams Production = new();

    public SchedulingPoints Scheduling { get; init; } = SchedulingPoints.None;

    /// <summary>Who runs the guest threads (a new host per VM).</summary>
    public Func<IGuestThreadHost> ThreadHost { get; init; } = () => new GuestThreadPool();

    /// <summary>Who runs the devices' own host threads (the hint thread).</summary>
    public IDeviceThreads DeviceThreads { get; init; } = DedicatedDeviceThreads.Instance;

    public IHintDefences HintDefences { get; init; } = StandardHintDefences.Instance;

    public HotPathDefences HotPaths { get; init; } = HotPathDefences.Production;

    /// <summary>Whether the balloon driver initialises the blocks it gives back (R12's mutant passes false).</summary>
    public bool BalloonInitialisesOnRelease { get; init; } = true;

    /// <summary>The inflate/deflate ordering rules B1-B6 (R13-R18's mutants remove one each).</summary>
    public IBalloonDefences BalloonDefences { get; init; } = StandardBalloonDefences.Instance;

    /// <summary>
    /// Whether the inflate/deflate driver runs as a guest thread. Always in production; the fuzzer's hint-only profiles
    /// leave it out so their schedules stay those their seed bounds were measured with.
    /// </summary>
    public bool RunsInflateDriver { get; init; } = true;

    /// <summary>Told the page of every guest store (and reported discard) once it landed and was logged.</summary>
    public Action<long>? StoreObserver { get; init; }

    /// <summary>Told when a dirty-log sync starts (true) and ends (false) (fuzzer bookkeeping).</summary>
    public Action<bool>? SyncObserver { get; init; }
}
