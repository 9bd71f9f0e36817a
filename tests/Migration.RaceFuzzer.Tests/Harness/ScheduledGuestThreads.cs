using Migration.Shared.Concurrency;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;

namespace Migration.RaceFuzzer.Tests.Harness;

/// <summary>
/// A VM's guest threads as actors of the seeded scheduler. Pausing is not instant (<see cref="HostModel.StopLatency"/>
/// points, while the guest runs on); then no step starts, and it waits for the steps under way, as a threaded pause
/// waits for every vCPU to park between two steps. Guest threads take no host CPU once the VM is stopped: they are
/// scheduled only to finish a step under way. A throttled vCPU sleeps between two steps, as the threaded host's does:
/// it is not scheduled until the fuzzer's clock has passed its sleep, and a pause does not wait for it.
/// </summary>
internal sealed class ScheduledGuestThreads(SeededScheduler scheduler, SchedulingPoints points, int stopLatency,
    Func<bool> runOver, TimeProvider time) : IGuestThreadHost
{
    [ThreadStatic]
    private static VcpuThrottle.Vcpu? t_vcpu;

    private int _stepsInFlight;
    private volatile bool _stopped;

    /// <summary>The VM was stopped for stop-and-copy.</summary>
    public bool Stopped => _stopped;

    public IReadOnlyList<string> Crashes => [];

    public void Start(IReadOnlyList<GuestThread> threads)
    {
        foreach (var thread in threads)
        {
            AddActor(thread.Name, thread.Step, thread.Vcpu);
        }
    }

    /// <summary>A guest-side actor beside the VM's own threads (a misbehaving driver, reclaim).</summary>
    public void AddActor(string name, Func<StepResult> step, VcpuThrottle.Vcpu? vcpu = null)
    {
        bool inStep = false;
        long wakesAt = 0; // the fuzzer clock's timestamp a throttled vCPU sleeps until
        TimeSpan asleep = TimeSpan.Zero;
        scheduler.Add(
            name,
            () =>
            {
                if (!_stopped)
                {
                    if (vcpu is not null && t_vcpu != vcpu)
                    {
                        t_vcpu = vcpu;
                        vcpu.Enter();
                    }

                    if (asleep > TimeSpan.Zero)
                    {
                        vcpu!.Slept(asleep);
                        asleep = TimeSpan.Zero;
                    }

                    inStep = true;
                    Interlocked.Increment(ref _stepsInFlight);
                    try
                    {
                        step();
                    }
                    finally
                    {
                        Interlocked.Decrement(ref _stepsInFlight);
                        inStep = false;
                    }

                    // between two steps, never inside one (C1)
                    if (vcpu?.AfterStep() is { } sleep && sleep > TimeSpan.Zero)
                    {
                        asleep = sleep;
                        wakesAt = time.GetTimestamp() + (long)(sleep.TotalSeconds * time.TimestampFrequency);
                    }
                }

                return !runOver();
            },
            ready: () => inStep || (!_stopped && (wakesAt == 0 || time.GetTimestamp() >= wakesAt)));
    }

    /// <summary>
    /// A mutant's host (C1 removed): a throttled vCPU sleeps inside its step, between a store and the store's dirty
    /// mark, and the host counts it as parked meanwhile, as a sleeping thread looks. A pause that comes then does not
    /// wait for it: the final sync runs before the mark lands.
    /// </summary>
    public void SleepInsideStep()
    {
        if (t_vcpu is not { Share: > 0 } vcpu || _stopped)
        {
            points.Yield();
            return;
        }

        Interlocked.Decrement(ref _stepsInFlight);
        try
        {
            // the sleep: other actors run, the pause among them
            for (int i = 0, turns = 1 + (int)(vcpu.Share * 8); i < turns; i++)
            {
                points.Preempt();
            }
        }
        finally
        {
            Interlocked.Increment(ref _stepsInFlight);
        }
    }

    /// <summary>Nothing to wake: an actor that went idle is scheduled again like any other.</summary>
    public void Wake()
    {
    }

    public void Pause()
    {
        for (int i = 0; i < stopLatency; i++)
        {
            points.Preempt();
        }

        _stopped = true;
        points.WaitUntil(() => Volatile.Read(ref _stepsInFlight) == 0);
    }

    public void Resume() => _stopped = false;

    public void Shutdown()
    {
    }
}
