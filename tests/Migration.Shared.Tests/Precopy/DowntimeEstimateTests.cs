using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.TestSupport;

namespace Migration.Shared.Tests.Precopy;

/// <summary>
/// The downtime limit is a promise: precopy stops only when the whole estimate fits, the switchover's measured fixed
/// cost counted in full. Real engine and guest; the target's rehearsal round trip is scripted.
/// </summary>
public sealed class DowntimeEstimateTests
{
    private static (MigrationReport Report, FakeTransport Transport) Migrate(TimeSpan rehearsal, TimeSpan limit)
    {
        using var vm = WarmGuests.Idle();
        FakeTransport? transport = null;
        var seams = EngineSeams.Production with
        {
            Transport = (source, counters) => transport = new FakeTransport(source, counters, resumeFirst: true)
            {
                RehearsalRoundTrip = rehearsal,
                OnComplete = _ => new Migration.Protocol.CompleteReply { Provisional = true },
            },
        };
        var options = MigrationOptions.Defaults with
        {
            Target = new Uri("http://in-process"),
            DowntimeLimit = limit,
            MaxRounds = 4,
        };
        var report = new PrecopyEngine(vm, options, seams).MigrateAsync().WaitAsync(TimeSpan.FromSeconds(60))
            .GetAwaiter().GetResult();
        return (report, transport!);
    }

    [Fact]
    public void ASwitchoverWhoseFixedCostAloneExceedsTheLimit_NeverStops_AndSaysWhy()
    {
        // The rehearsal says the switchover costs 250 ms before any page; the limit is 200 ms. Capping the fixed cost
        // (it used to be capped at a quarter of the limit) would stop and take 250 ms or more.
        var (report, transport) = Migrate(TimeSpan.FromMilliseconds(250), TimeSpan.FromMilliseconds(200));

        Assert.Equal(MigrationStatus.Failed, report.Status);
        Assert.Contains("fixed cost alone", report.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("complete", transport.Calls);
        Assert.True(transport.Calls.Count(c => c == "rehearse") > 3, "re-measured while held back by it");
    }

    [Fact]
    public void AFixedCostThatFits_IsInTheEstimate_SplitByPhase()
    {
        var (report, _) = Migrate(TimeSpan.FromMilliseconds(40), TimeSpan.FromMilliseconds(300));

        Assert.Equal(MigrationStatus.Completed, report.Status);
        Assert.True(report.Timing.ExpectedDowntimePhasesMs["complete"] >= 40);
        Assert.True(report.Timing.ExpectedDowntimeMs >= 40);
        Assert.Equal(report.Timing.ExpectedDowntimeMs, report.Timing.ExpectedDowntimePhasesMs.Values.Sum(), 0.01);
        Assert.Equal(300, report.Timing.DowntimeLimitMs);
    }
}
