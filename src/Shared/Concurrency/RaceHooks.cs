namespace Migration.Shared.Concurrency;

/// <summary>
/// Bugs the race fuzzer can switch on, one per entry of the race catalogue (see the README's race table). Each one
/// removes exactly the defence named; production code never sets any.
/// </summary>
[Flags]
public enum Mutation : long
{
    None = 0,

    /// <summary>R1: the device does not compare command ids: an old run's START starts hinting and its blocks apply.</summary>
    AcceptStaleIds = 1 << 0,

    /// <summary>R2: the engine does not stop hinting before the precopy syncs (it still issues a new id after).</summary>
    SkipStopBeforeSync = 1 << 1,

    /// <summary>R3: the engine issues the first command id before dirty logging is on.</summary>
    HintBeforeLogging = 1 << 2,

    /// <summary>R4: applying a hint also clears the write log of the range in eager mode.</summary>
    HintClearsWriteLog = 1 << 3,

    /// <summary>R5: manual dirty-log mode with hints but without wait-on-ack is not refused.</summary>
    ManualWithoutWaitOnAck = 1 << 4,

    /// <summary>R6: in manual mode a hint clears the migration bitmap but not the dirty-log chunk.</summary>
    HintWithoutChunkClear = 1 << 5,

    /// <summary>R7: the guest write path marks the page dirty before it stores.</summary>
    MarkBeforeStore = 1 << 6,

    /// <summary>R8: an eager sync reads a log word and clears it in two steps.</summary>
    NonAtomicSync = 1 << 7,

    /// <summary>
    /// R9: the hint thread keeps applying while the VM is stopped, and the final sync is not wrapped (no STOP before;
    /// DONE only after the final send), so hints flow during stop-and-copy.
    /// </summary>
    ApplyWhileStopped = 1 << 8,

    /// <summary>R10: an id buffer equal to the current id restarts hinting from any state, not only REQUESTED.</summary>
    HonourReplayedStart = 1 << 9,

    /// <summary>R11: no per-round barrier on the channels and the target ignores round tags.</summary>
    OutOfOrderChannels = 1 << 10,

    /// <summary>R12: the balloon driver releases held blocks without initialising (poisoning) them.</summary>
    ReleaseWithoutPoison = 1 << 11,
}

/// <summary>
/// The seam between the production code and the race fuzzer: which <see cref="Mutation"/>s are on, and a scheduling
/// point callback. Components take a <see cref="RaceHooks"/> (default <see cref="None"/>) and call
/// <see cref="Yield"/> where a real thread could be preempted in a way that matters; under the fuzzer's seeded
/// scheduler that hands the CPU to another actor, otherwise it does nothing.
/// </summary>
/// <remarks>
/// Rule for yield points: never inside a lock another actor might need. Locks that span a yield point are taken with
/// <see cref="Enter"/>, which yields instead of blocking while another actor holds the lock, so the one-actor-at-a-time
/// scheduler cannot deadlock.
/// </remarks>
public sealed class RaceHooks
{
    public static readonly RaceHooks None = new();

    [ThreadStatic]
    private static int t_noYield;

    public Mutation Mutations { get; init; }

    /// <summary>
    /// Called at every scheduling point with whether it is a phase boundary (always a chance to switch actors) rather
    /// than a fine-grained point the scheduler may skip; set by the fuzzer's scheduler.
    /// </summary>
    public Action<bool>? YieldPoint { get; init; }

    /// <summary>Blocks the current actor until a condition holds; set by the fuzzer's scheduler (which then runs others).</summary>
    public Action<Func<bool>>? WaitPoint { get; init; }

    /// <summary>Observer: a guest store to this page has landed (the fuzzer's write bookkeeping).</summary>
    public Action<long>? Stored { get; init; }

    /// <summary>Observer: a dirty-log sync starts (true) or ends (false).</summary>
    public Action<bool>? Syncing { get; init; }

    /// <summary>
    /// Phase boundaries a scheduler-driven stop takes between the request and the vCPUs being parked, during which the
    /// guest keeps running. Real stops are not instant: QEMU's completion takes its locks and kicks every vCPU out of
    /// the guest, and a vCPU only notices at its next exit, so the fuzzer draws this per seed (mostly short, sometimes
    /// long). Only read under a scheduler (<see cref="YieldPoint"/> set).
    /// </summary>
    public int StopLatency { get; init; } = 8;

    public bool Has(Mutation mutation) => (Mutations & mutation) != 0;

    /// <summary>A fine-grained scheduling point (between a store and its mark, between words of a sync).</summary>
    public void Yield()
    {
        if (YieldPoint is { } yield && t_noYield == 0)
        {
            yield(false);
        }
    }

    /// <summary>A phase boundary (between a sync and the next command id, inside a race window a mutant opens).</summary>
    public void Preempt()
    {
        if (YieldPoint is { } yield && t_noYield == 0)
        {
            yield(true);
        }
    }

    /// <summary>Waits until <paramref name="ready"/> holds: under a scheduler by letting other actors run.</summary>
    public void WaitUntil(Func<bool> ready)
    {
        ArgumentNullException.ThrowIfNull(ready);
        if (WaitPoint is { } wait)
        {
            wait(ready);
        }
        else
        {
            SpinWait.SpinUntil(ready);
        }
    }

    /// <summary>Takes <paramref name="gate"/>; under a scheduler, yields until the actor holding it lets go.</summary>
    public void Enter(object gate)
    {
        if (YieldPoint is not { } yield)
        {
            Monitor.Enter(gate);
            return;
        }

        while (!Monitor.TryEnter(gate))
        {
            yield(true);
        }
    }

    /// <summary><see cref="Enter"/> as a scope: <c>using (hooks.Lock(gate)) { ... }</c>.</summary>
    public LockScope Lock(object gate)
    {
        Enter(gate);
        return new LockScope(gate);
    }

    public readonly struct LockScope(object gate) : IDisposable
    {
        public void Dispose() => Monitor.Exit(gate);
    }

    /// <summary>
    /// Suppresses yield points on this thread until disposed: for code inside a plain lock (the allocator's zone lock),
    /// where handing the CPU to another actor could deadlock the scheduler.
    /// </summary>
    public static NoYieldScope NoYield()
    {
        t_noYield++;
        return default;
    }

    public readonly struct NoYieldScope : IDisposable
    {
        public void Dispose() => t_noYield--;
    }
}
