using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Concurrency;
using Migration.Shared.Machine;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R24 (rule C1): a throttle that sleeps a vCPU inside the write path, between a store and its dirty mark, where the
/// host sees a sleeping thread and counts it as parked. A pause then returns with the store made and unmarked: the
/// final sync misses the page, the target keeps its older copy, and the vCPU finishes its step on a stopped guest.
/// The correct host throttles only between two steps.
/// </summary>
public sealed class R24ThrottleInsideStore : Mutant
{
    public override string Race => "R24";

    public override FuzzProfile Profile => FuzzProfile.Throttled;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams.ThreadHost() is ScheduledGuestThreads host
            ? seams with
            {
                Scheduling = new SchedulingPoints
                {
                    YieldPoint = seams.Scheduling.YieldPoint,
                    WaitPoint = seams.Scheduling.WaitPoint,
                    StoreMarkGap = host.SleepInsideStep,
                },
            }
            : seams;
}
