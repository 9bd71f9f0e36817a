using Microsoft.Extensions.Time.Testing;
using Migration.Protocol;
using Migration.Shared.Protocol;
using Migration.Target.Receiving;

namespace Migration.Target.Tests.Receiving;

/// <summary>
/// The lease timer runs on the clock the target was given: a fake clock fires it as the test advances it (a timer
/// made from the system clock would not fire inside <see cref="FakeTimeProvider.Advance"/>, so these fail).
/// </summary>
public sealed class LeasesTests
{
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(5);

    [Fact]
    public void TheCheck_RunsEveryPeriodOfTheInjectedClock_UntilDisposed()
    {
        var clock = new FakeTimeProvider();
        int checks = 0;
        var period = Leases.CheckPeriod(Lease);
        var leases = new Leases(Lease, clock, () => checks++);

        clock.Advance(period - TimeSpan.FromTicks(1));
        Assert.Equal(0, checks);
        clock.Advance(TimeSpan.FromTicks(1));
        Assert.Equal(1, checks);
        clock.Advance(period * 3);
        Assert.Equal(4, checks);

        leases.Dispose();
        clock.Advance(period * 3);
        Assert.Equal(4, checks);
    }

    [Fact]
    public void AQuietSource_LosesItsMigration_AsTheClockAdvances_WithNoOneCallingExpireLeases()
    {
        var clock = new FakeTimeProvider();
        using var target = Targets.New(new ScriptedSwitchover(), TargetOptions.Defaults with { Lease = Lease }, clock);
        var owner = target.BeginAs("a");

        clock.Advance(Lease);
        Assert.Equal(TargetState.Receiving, target.State); // quiet for the lease, not longer
        clock.Advance(Leases.CheckPeriod(Lease));

        Assert.Equal(TargetState.Failed, target.State);
        var status = target.Status(new StatusRequest { MigrationId = "a" }, owner);
        Assert.Equal(MigrationOutcome.Discarded, status.Outcome);
        Assert.Contains("abandoned: the source did nothing", status.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void AnUnconfirmedGuest_IsDiscardedAsTheClockAdvances()
    {
        var clock = new FakeTimeProvider();
        var switchover = new ScriptedSwitchover();
        using var target = Targets.New(switchover, TargetOptions.Defaults with { Lease = Lease }, clock);
        var owner = target.BeginAs("a");
        target.Complete(new CompleteRequest { MigrationId = "a", ResumeFirst = true }, owner);

        clock.Advance(Lease + Leases.CheckPeriod(Lease));

        Assert.Equal(TargetState.Failed, target.State);
        Assert.NotEqual(Shared.Machine.VmRunState.Running, switchover.Prepared!.State);
        var status = target.Status(new StatusRequest { MigrationId = "a" }, owner);
        Assert.Contains("no Confirm", status.Error, StringComparison.Ordinal);
    }
}
