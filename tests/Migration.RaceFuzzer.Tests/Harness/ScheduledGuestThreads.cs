using Migration.Shared.Concurrency;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;

namespace Migration.RaceFuzzer.Tests.Harness;

/// <summary>
/// A VM's guest threads as actors of the seeded scheduler. Pausing is not instant (<see cref="HostModel.StopLatency"/>
/// points, while the guest runs on); then no step starts, and it waits for the steps under way, as a threaded pause
/// waits for every vCPU to park between two steps. Guest threads take no host CPU once the VM is stopped: they are
/// scheduled only to finish a step under way.
/// </summary>
internal sealed class ScheduledGuestThreads(SeededScheduler scheduler, SchedulingPoints points, int stopLatency,
    Func<bool> runOver) : IGuestThreadHost
{
    private int _stepsInFlight;
    private volatile bool _stopped;

    /// <summary>The VM was stopped for stop-and-copy.</summary>
    public bool Stopped => _stopped;

    public IReadOnlyList<string> Crashes => [];

    public void Start(IReadOnlyList<GuestThread> threads)
    {
        foreach (var thread in threads)
        {
            AddActor(thread.Name, thread.Step);
        }
    }

    /// <summary>A guest-side actor beside the VM's own threads (a misbehaving driver, reclaim).</summary>
    public void AddActor(string name, Func<StepResult> step)
    {
        bool inStep = false;
        scheduler.Add(
            name,
            () =>
            {
                if (!_stopped)
                {
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
                }

                return !runOver();
            },
            ready: () => inStep || !_stopped);
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
