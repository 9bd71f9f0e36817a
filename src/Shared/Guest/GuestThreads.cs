using System.Diagnostics;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Guest.Workloads;

namespace Migration.Shared.Guest;

/// <summary>One guest thread: a vCPU running its workload, or the balloon driver's worker. A step is short.</summary>
/// <param name="Name">The OS thread's name.</param>
/// <param name="Step">One short step.</param>
/// <param name="IdleFor">
/// How long the thread may sleep after an idle step (asked after each one); without it, 1 ms. A thread that knows
/// when it next has work (a timer-driven pass), or that a device will wake it (<see cref="IGuestThreadHost.Wake"/>),
/// says so, rather than waking 1000 times a second for nothing. Pausing and stopping wake it.
/// </param>
/// <param name="Vcpu">
/// The vCPU this thread runs, whose throttle the host applies between steps and to which the write path counts its
/// stores; null for a device driver's worker.
/// </param>
public readonly record struct GuestThread(string Name, Func<StepResult> Step, Func<TimeSpan>? IdleFor = null,
    VcpuThrottle.Vcpu? Vcpu = null)
{
    /// <summary>The sleep after an idle step of a thread without <see cref="IdleFor"/>, and the shortest of any.</summary>
    public static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(1);

    /// <summary>The longest an idle thread sleeps, so a wake-up no device sends costs at most this.</summary>
    public static readonly TimeSpan LongestSleep = TimeSpan.FromSeconds(1);

    /// <summary><paramref name="wanted"/> within [<see cref="Poll"/>, <see cref="LongestSleep"/>].</summary>
    public static TimeSpan Sleep(TimeSpan wanted) =>
        wanted < Poll ? Poll : wanted > LongestSleep ? LongestSleep : wanted;
}

/// <summary>
/// Runs a VM's guest threads. Production: one OS thread each (<see cref="GuestThreadPool"/>). The race fuzzer: actors
/// of its seeded scheduler, so the VM never has to ask which of the two it runs on.
/// </summary>
internal interface IGuestThreadHost
{
    /// <summary>Errors that halted a guest thread (a guest panic; the others go on).</summary>
    IReadOnlyList<string> Crashes { get; }

    void Start(IReadOnlyList<GuestThread> threads);

    /// <summary>
    /// Returns once no step is under way and none will start until <see cref="Resume"/>: memory is quiescent.
    /// </summary>
    void Pause();

    void Resume();

    /// <summary>
    /// Ends the idle sleep of every guest thread: a device changed what a driver waits for. A wake-up that comes
    /// while a thread is still in its step is not lost: that thread does not go to sleep after it.
    /// </summary>
    void Wake();

    /// <summary>Stops the threads for good and waits for them.</summary>
    void Shutdown();
}

/// <summary>Guest threads on OS threads; pausing parks each between two steps.</summary>
internal sealed class GuestThreadPool : IGuestThreadHost
{
    private readonly object _gate = new();
    private readonly List<string> _crashes = [];
    private Action[] _joins = [];
    private bool _pauseRequested;
    private bool _stopRequested;
    private int _parked;
    private int _live;
    private long _wakes;

    public IReadOnlyList<string> Crashes
    {
        get
        {
            lock (_gate)
            {
                return [.. _crashes];
            }
        }
    }

    public void Start(IReadOnlyList<GuestThread> threads)
    {
        lock (_gate)
        {
            _live = threads.Count;
            // spare OS threads when some wait (a target reserved them while the guest's pages arrived)
            _joins = [.. threads.Select(t => SpareThreads.Run(t.Name, () => Run(t)))];
        }
    }

    public void Pause()
    {
        lock (_gate)
        {
            _pauseRequested = true;
            Monitor.PulseAll(_gate); // wakes threads sleeping after an idle step
            while (_parked < _live)
            {
                Monitor.Wait(_gate);
            }
        }
    }

    public void Resume()
    {
        lock (_gate)
        {
            _pauseRequested = false;
            Monitor.PulseAll(_gate);
        }
    }

    public void Wake()
    {
        lock (_gate)
        {
            _wakes++;
            Monitor.PulseAll(_gate);
        }
    }

    public void Shutdown()
    {
        Action[] joins;
        lock (_gate)
        {
            _stopRequested = true;
            Monitor.PulseAll(_gate);
            joins = _joins;
        }

        foreach (var join in joins)
        {
            join();
        }
    }

    private void Run(GuestThread thread)
    {
        thread.Vcpu?.Enter();
        try
        {
            Loop(thread);
        }
        finally
        {
            VcpuThrottle.Vcpu.Leave();
        }
    }

    private void Loop(GuestThread thread)
    {
        while (!Volatile.Read(ref _stopRequested))
        {
            if (Volatile.Read(ref _pauseRequested))
            {
                Park();
                continue;
            }

            long wakes = Interlocked.Read(ref _wakes);
            StepResult result;
            try
            {
                result = thread.Step();
            }
            catch (Exception ex) when (ex is GuestKernelException or GuestOutOfMemoryException
                or InvalidOperationException or ArgumentException or InvalidDataException)
            {
                Halt(thread.Name, ex);
                return;
            }

            // Between two steps: the step's stores are marked, so a throttle's sleep here cannot hide one (C1).
            if (thread.Vcpu is { } vcpu && vcpu.AfterStep() is var throttle && throttle > TimeSpan.Zero)
            {
                vcpu.Slept(SleepThrottled(throttle));
            }
            else if (result == StepResult.Idle)
            {
                if (thread.IdleFor is { } idleFor)
                {
                    SleepIdle(idleFor(), wakes);
                }
                else
                {
                    Thread.Sleep(GuestThread.Poll);
                }
            }
        }
    }

    /// <summary>
    /// Sleeps a throttled vCPU for <paramref name="time"/>, not cut short by wake-ups (device interrupts go to the
    /// drivers' threads), but ended at once by a pause or a stop, so a throttle never adds to the downtime. Returns
    /// how long it slept.
    /// </summary>
    private TimeSpan SleepThrottled(TimeSpan time)
    {
        long start = Stopwatch.GetTimestamp();
        lock (_gate)
        {
            while (!_pauseRequested && !_stopRequested)
            {
                TimeSpan left = time - Stopwatch.GetElapsedTime(start);
                if (left <= TimeSpan.Zero)
                {
                    break;
                }

                Monitor.Wait(_gate, left);
            }
        }

        return Stopwatch.GetElapsedTime(start);
    }

    /// <summary>Sleeps up to <paramref name="timeout"/>, unless woken since <paramref name="wakesSeen"/>.</summary>
    private void SleepIdle(TimeSpan timeout, long wakesSeen)
    {
        lock (_gate)
        {
            if (!_pauseRequested && !_stopRequested && _wakes == wakesSeen && timeout > TimeSpan.Zero)
            {
                Monitor.Wait(_gate, timeout);
            }
        }
    }

    private void Park()
    {
        lock (_gate)
        {
            _parked++;
            Monitor.PulseAll(_gate);
            while (_pauseRequested && !_stopRequested)
            {
                Monitor.Wait(_gate);
            }

            _parked--;
        }
    }

    private void Halt(string name, Exception ex)
    {
        lock (_gate)
        {
            _crashes.Add($"{name} halted: {ex.Message}");
            _live--;
            Monitor.PulseAll(_gate);
        }
    }
}
