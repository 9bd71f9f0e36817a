using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.TestSupport;

namespace Migration.Shared.Tests.Precopy;

/// <summary>
/// When the switchover is rehearsed: not in setup. The first rehearsal, which pays for first-call code and is not
/// counted, runs beside round 0; the counted ones follow round 0, so the first decision already has the measured fixed
/// cost in its estimate, as it had when setup took them all.
/// </summary>
public sealed class RehearsalScheduleTests
{
    private static readonly TimeSpan RoundTrip = TimeSpan.FromMilliseconds(40);

    [Fact]
    public async Task SetupRehearsesNothing_AndTheFirstDecisionHasTheRehearsedCost()
    {
        // The target answers a rehearsal only once round 0 has handed pages to a channel: a setup that waited for a
        // rehearsal would never reach round 0, and the rehearsal would give up.
        var roundZero = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var spy = new FirstDecision();
        using var vm = WarmGuests.Idle();
        FakeTransport? transport = null;
        var seams = EngineSeams.Production with
        {
            Transport = (source, counters) => transport = new FakeTransport(source, counters, resumeFirst: true)
            {
                RehearsalRoundTrip = RoundTrip,
                OnPages = () => roundZero.TrySetResult(),
                BeforeRehearsalReply = () => roundZero.Task.WaitAsync(TimeSpan.FromSeconds(10)),
                OnComplete = _ => new Migration.Protocol.CompleteReply { Provisional = true },
            },
            Convergence = policy => spy.Wrapping(policy, () => Rehearsals(transport!)),
        };

        var report = await new PrecopyEngine(vm, Options(), seams).MigrateAsync().WaitAsync(TimeSpan.FromSeconds(60));

        Assert.True(report.Status == MigrationStatus.Completed, $"{report.Status}: {report.Error}");
        Assert.DoesNotContain("rehearsal", report.Timing.SetupPhasesMs.Keys);
        Assert.True(report.Timing.FirstRehearsalsMs > 0, "the wait for the first rehearsals is reported");
        // One uncounted warm-up and two counted rehearsals before the first decision, whose estimate counts them.
        Assert.Equal(3, spy.RehearsalsBefore);
        Assert.Equal(0, spy.Outcome!.Value.Round);
        Assert.True(spy.Outcome.Value.FixedCostMs >= RoundTrip.TotalMilliseconds,
            $"first decision's fixed cost {spy.Outcome.Value.FixedCostMs} ms");
    }

    [Fact]
    public async Task ARehearsalThatFailsBesideRoundZero_FailsTheMigration_AndTheGuestRunsOn()
    {
        using var vm = WarmGuests.Idle();
        var seams = EngineSeams.Production with
        {
            Transport = (source, counters) => new FakeTransport(source, counters, resumeFirst: true)
            {
                BeforeRehearsalReply = () => throw new MigrationFailedException(FailureKind.TargetRefused,
                    "the target refused the rehearsal"),
            },
        };

        var report = await new PrecopyEngine(vm, Options(), seams).MigrateAsync().WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(MigrationStatus.Failed, report.Status);
        Assert.Contains("the target refused the rehearsal", report.Error, StringComparison.Ordinal);
        Assert.Equal(VmRunState.Running, vm.State);
    }

    private static MigrationOptions Options() => MigrationOptions.Defaults with
    {
        Target = new Uri("http://in-process"),
        DowntimeLimit = TimeSpan.FromMilliseconds(300),
    };

    private static int Rehearsals(FakeTransport transport)
    {
        lock (transport.Calls)
        {
            return transport.Calls.Count(c => c == "rehearse");
        }
    }

    /// <summary>Records the first decision's figures and how many rehearsals the target had answered by then.</summary>
    private sealed class FirstDecision
    {
        public RoundOutcome? Outcome { get; private set; }

        public int RehearsalsBefore { get; private set; }

        public IConvergencePolicy Wrapping(IConvergencePolicy inner, Func<int> rehearsals) => new Policy(this, inner,
            rehearsals);

        private sealed class Policy(FirstDecision spy, IConvergencePolicy inner, Func<int> rehearsals)
            : IConvergencePolicy
        {
            public ConvergenceDecision Decide(RoundOutcome round)
            {
                if (spy.Outcome is null)
                {
                    spy.Outcome = round;
                    spy.RehearsalsBefore = rehearsals();
                }

                return inner.Decide(round);
            }
        }
    }
}
