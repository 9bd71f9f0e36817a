namespace Migration.Shared.Concurrency;

/// <summary>
/// Where a component may be preempted in a way that matters for a race, and how it waits and locks. In production
/// every point is a no-op and locks are plain monitors (<see cref="None"/>); under the race fuzzer's seeded scheduler
/// a point hands the CPU to another actor, so the interleavings between two points are drawn from a seed.
/// </summary>
/// <remarks>
/// Rule for points: never inside a lock another actor might need. Locks that span a point are taken with
/// <see cref="Lock"/>, which yields instead of blocking while another actor holds the lock, so the
/// one-actor-at-a-time scheduler cannot deadlock. Code inside a plain lock suppresses points with
/// <see cref="NoYield"/>.
/// </remarks>
public sealed class SchedulingPoints
{
    public static readonly SchedulingPoints None = new();

    [ThreadStatic]
    private static int t_noYield;

    /// <summary>
    /// Called at every point with whether it is a phase boundary (always a chance to switch actors) rather than a
    /// fine-grained point the scheduler may skip. Null in production.
    /// </summary>
    public Action<bool>? YieldPoint { get; init; }

    /// <summary>Blocks the current actor until a condition holds (the scheduler runs others meanwhile).</summary>
    public Action<Func<bool>>? WaitPoint { get; init; }

    /// <summary>A fine-grained point (between a store and its mark, between words of a sync).</summary>
    public void Yield()
    {
        if (YieldPoint is { } yield && t_noYield == 0)
        {
            yield(false);
        }
    }

    /// <summary>
    /// What runs between a guest store and its dirty mark, in place of a plain <see cref="Yield"/>: the fuzzer's model
    /// of a host that delays a vCPU there (a throttle put in the write path, which rule C1 forbids). Null everywhere
    /// else.
    /// </summary>
    public Action? StoreMarkGap { get; init; }

    /// <summary>The point between a guest store and its dirty mark (R7's window).</summary>
    public void BetweenStoreAndMark()
    {
        if (StoreMarkGap is { } gap && t_noYield == 0)
        {
            gap();
        }
        else
        {
            Yield();
        }
    }

    /// <summary>A phase boundary (between a sync and the next command id).</summary>
    public void Preempt()
    {
        if (YieldPoint is { } yield && t_noYield == 0)
        {
            yield(true);
        }
    }

    /// <summary>
    /// Waits until <paramref name="ready"/> holds: spinning in production, by running others under a scheduler.
    /// </summary>
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

    /// <summary>Takes <paramref name="gate"/> as a scope: <c>using (points.Lock(gate)) { ... }</c>.</summary>
    public LockScope Lock(object gate)
    {
        ArgumentNullException.ThrowIfNull(gate);
        if (YieldPoint is not { } yield)
        {
            Monitor.Enter(gate);
            return new LockScope(gate);
        }

        while (!Monitor.TryEnter(gate))
        {
            yield(true);
        }

        return new LockScope(gate);
    }

    public readonly struct LockScope(object gate) : IDisposable
    {
        public void Dispose() => Monitor.Exit(gate);
    }

    /// <summary>
    /// Suppresses points on this thread until disposed: for code inside a plain lock (the allocator's zone lock),
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
