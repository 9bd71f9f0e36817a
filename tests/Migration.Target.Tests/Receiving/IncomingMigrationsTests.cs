using Grpc.Core;
using Microsoft.Extensions.Time.Testing;
using Migration.Protocol;
using Migration.Shared.Protocol;
using Migration.Target.Receiving;

namespace Migration.Target.Tests.Receiving;

/// <summary>The target's state machine: every transition, the windows where two calls meet, ownership, leases.</summary>
public sealed class IncomingMigrationsTests
{
    private static readonly CallerCredentials Nobody = new(null, null);

    [Fact]
    public void Begin_MovesIdleToReceiving_AndABusyTargetRefusesASecondBegin()
    {
        using var target = Targets.New(new ScriptedSwitchover());
        Assert.Equal(TargetState.Idle, target.State);
        target.BeginAs("secret-id");
        Assert.Equal(TargetState.Receiving, target.State);
        Assert.Equal("receiving", target.Status(new StatusRequest(), Nobody).State);

        var busy = Assert.Throws<RpcException>(() => target.Begin(Targets.Begin("b"), Nobody));
        Assert.Equal(StatusCode.FailedPrecondition, busy.StatusCode);
        Assert.DoesNotContain("secret-id", busy.Status.Detail, StringComparison.Ordinal); // others do not learn the id
    }

    [Fact]
    public void ABeginItsCallerGaveUpOn_IsDiscardedAtOnce_NotKeptForTheLease()
    {
        // The source cancelled its Begin call while the target was taking it: the reply, with the key, is lost, so the
        // source cannot cancel. The target must not stay busy with a migration nobody can drive.
        using var target = Targets.New(new ScriptedSwitchover());
        using var aborted = new CancellationTokenSource();
        aborted.Cancel();
        var refused = Assert.Throws<RpcException>(() => target.Begin(Targets.Begin("a"), Nobody, aborted.Token));
        Assert.Equal(StatusCode.Cancelled, refused.StatusCode);
        Assert.Equal(TargetState.Failed, target.State);
        target.BeginAs("b"); // free for the next
        Assert.Equal(TargetState.Receiving, target.State);
    }

    [Fact]
    public void ASourceWhoseBeginReplyWasLost_CancelsWithTheKeyItProposed()
    {
        // Begin's reply never arrived (its deadline passed under load): the source still holds the key it proposed,
        // so its Cancel frees the target at once instead of leaving it busy for the lease.
        using var target = Targets.New(new ScriptedSwitchover());
        const string Key = "00112233445566778899aabbccddeeff";
        var request = Targets.Begin("a");
        request.MigrationKey = Key;
        _ = target.Begin(request, Nobody); // the reply is dropped
        var cancelled = target.Cancel(new CancelRequest { MigrationId = "a", Reason = "Begin timed out" },
            new CallerCredentials(Key, null));
        Assert.True(cancelled.Cancelled);
        Assert.Equal(TargetState.Failed, target.State);

        var bad = Targets.Begin("b");
        bad.MigrationKey = "guessable";
        var refused = Assert.Throws<RpcException>(() => target.Begin(bad, Nobody));
        Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
    }

    [Fact]
    public void Cancel_DiscardsAReceivingMigration_AndTheNextBeginIsAccepted()
    {
        using var target = Targets.New(new ScriptedSwitchover());
        var owner = target.BeginAs("a");
        var reply = target.Cancel(new CancelRequest { MigrationId = "a", Reason = "user" }, owner);
        Assert.True(reply.Cancelled);
        Assert.Equal(MigrationOutcome.Discarded, reply.Outcome);
        Assert.Equal(TargetState.Failed, target.State);
        var status = target.Status(new StatusRequest { MigrationId = "a" }, owner);
        Assert.Equal(MigrationOutcome.Discarded, status.Outcome);
        Assert.Contains("cancelled by the source: user", status.Error, StringComparison.Ordinal);

        Assert.False(target.Cancel(new CancelRequest { MigrationId = "a" }, owner).Cancelled); // nothing left to cancel
        target.BeginAs("b");
        Assert.Equal(TargetState.Receiving, target.State);
    }

    [Fact]
    public void AnotherClient_CannotCancelStreamCompleteOrQuerySomeoneElsesMigration()
    {
        using var target = Targets.New(new ScriptedSwitchover());
        var owner = target.BeginAs("a");
        var thief = new CallerCredentials("0123456789abcdef0123456789abcdef", null);
        foreach (var stranger in new[] { Nobody, thief, owner with { CertificateThumbprint = "other" } })
        {
            Assert.False(target.Cancel(new CancelRequest { MigrationId = "a" }, stranger).Cancelled);
            Assert.Equal(StatusCode.Unauthenticated,
                Assert.Throws<RpcException>(() => target.RequireReceiving("a", stranger)).StatusCode);
            Assert.Equal(StatusCode.Unauthenticated, Assert.Throws<RpcException>(
                () => target.Complete(new CompleteRequest { MigrationId = "a" }, stranger)).StatusCode);
            var status = target.Status(new StatusRequest { MigrationId = "a" }, stranger);
            Assert.Equal((MigrationOutcome.Unknown, ""), (status.Outcome, status.MigrationId));
        }

        Assert.Equal(TargetState.Receiving, target.State);
        Assert.Equal(MigrationOutcome.Receiving, target.Status(new StatusRequest { MigrationId = "a" }, owner).Outcome);
    }

    /// <summary>
    /// The window the old string state left open: Complete checked "receiving" and set "verifying" under two locks, a
    /// Cancel in between disposed the migration, and the target refused every later Begin. Now the Cancel that meets a
    /// verifying migration is refused, the switchover finishes, and the target takes the next migration.
    /// </summary>
    [Fact]
    public async Task CancelDuringComplete_IsRefused_AndTheTargetAnswersTheNextBegin()
    {
        var switchover = new ScriptedSwitchover();
        switchover.Release.Reset();
        using var target = Targets.New(switchover);
        var owner = target.BeginAs("a");

        var complete = Task.Run(() => target.Complete(new CompleteRequest { MigrationId = "a" }, owner));
        Assert.True(switchover.Entered.Wait(TimeSpan.FromSeconds(30)), "the switchover never started");
        Assert.Equal(TargetState.Verifying, target.State);
        var late = target.Cancel(new CancelRequest { MigrationId = "a", Reason = "late" }, owner);
        Assert.Equal((false, MigrationOutcome.Verifying), (late.Cancelled, late.Outcome));
        Assert.Equal(TargetState.Verifying, target.State);
        var busy = Assert.Throws<RpcException>(() => target.Begin(Targets.Begin("b"), Nobody));
        Assert.Equal(StatusCode.FailedPrecondition, busy.StatusCode);

        switchover.Release.Set();
        var reply = await complete.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(reply.Verified);
        Assert.Equal(TargetState.Failed, target.State);
        Assert.Equal(MigrationOutcome.Discarded, target.Status(new StatusRequest { MigrationId = "a" }, owner).Outcome);
        target.BeginAs("b");
        Assert.Equal(TargetState.Receiving, target.State);
    }

    [Fact]
    public void CompleteAfterCancel_IsRefused_AndTheTargetTakesTheNextBegin()
    {
        using var target = Targets.New(new ScriptedSwitchover());
        var owner = target.BeginAs("a");
        Assert.True(target.Cancel(new CancelRequest { MigrationId = "a" }, owner).Cancelled);
        var refused = Assert.Throws<RpcException>(
            () => target.Complete(new CompleteRequest { MigrationId = "a" }, owner));
        Assert.Equal(StatusCode.FailedPrecondition, refused.StatusCode);
        target.BeginAs("b");
    }

    [Fact]
    public void ASwitchoverThatThrows_EndsFailed_NeverStuckVerifying()
    {
        var switchover = new ScriptedSwitchover { Result = (_, _) => throw new ObjectDisposedException("ram") };
        using var target = Targets.New(switchover);
        var owner = target.BeginAs("a");

        var reply = target.Complete(new CompleteRequest { MigrationId = "a" }, owner);

        Assert.False(reply.Verified);
        Assert.Contains("switchover failed", reply.Error, StringComparison.Ordinal);
        Assert.Equal(TargetState.Failed, target.State);
        target.BeginAs("b");
    }

    [Fact]
    public void ASecondComplete_IsRefused_AndAnIdUsedBefore_CannotBeginAgain()
    {
        using var target = Targets.New(new ScriptedSwitchover());
        var owner = target.BeginAs("a");
        target.Complete(new CompleteRequest { MigrationId = "a" }, owner);
        var again = Assert.Throws<RpcException>(
            () => target.Complete(new CompleteRequest { MigrationId = "a" }, owner));
        Assert.Equal(StatusCode.FailedPrecondition, again.StatusCode);
        var reused = Assert.Throws<RpcException>(() => target.Begin(Targets.Begin("a"), Nobody));
        Assert.Equal(StatusCode.AlreadyExists, reused.StatusCode);
    }

    [Fact]
    public void PagesOfAMigrationThatIsNotReceiving_AreRefused()
    {
        using var target = Targets.New(new ScriptedSwitchover());
        Assert.Equal(StatusCode.FailedPrecondition,
            Assert.Throws<RpcException>(() => target.RequireReceiving("a", Nobody)).StatusCode);
        var owner = target.BeginAs("a");
        Assert.Equal(StatusCode.FailedPrecondition,
            Assert.Throws<RpcException>(() => target.RequireReceiving("b", owner)).StatusCode);
        var migration = target.RequireReceiving("a", owner);
        Assert.True(target.Fail(migration, "bad batch"));
        Assert.False(target.Fail(migration, "twice")); // a second failure of the same migration changes nothing
        Assert.Equal(StatusCode.FailedPrecondition,
            Assert.Throws<RpcException>(() => target.RequireReceiving("a", owner)).StatusCode);
    }

    [Fact]
    public async Task AStreamThatFailsWhileTheMigrationVerifies_ChangesNothing()
    {
        var switchover = new ScriptedSwitchover();
        switchover.Release.Reset();
        using var target = Targets.New(switchover);
        var owner = target.BeginAs("a");
        var migration = target.RequireReceiving("a", owner);
        var complete = Task.Run(() => target.Complete(new CompleteRequest { MigrationId = "a" }, owner));
        Assert.True(switchover.Entered.Wait(TimeSpan.FromSeconds(30)));

        Assert.False(target.Fail(migration, "late stream error"));
        Assert.Equal(TargetState.Verifying, target.State);
        switchover.Release.Set();
        await complete.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(TargetState.Failed, target.State);
    }

    [Fact]
    public void AMigrationWhoseSourceGoesQuiet_IsDiscardedAfterTheLease()
    {
        var clock = new FakeTimeProvider();
        var options = TargetOptions.Defaults with { Lease = TimeSpan.FromSeconds(5) };
        using var target = Targets.New(new ScriptedSwitchover(), options, clock);
        var owner = target.BeginAs("a");
        clock.Advance(TimeSpan.FromSeconds(4));
        target.RequireReceiving("a", owner); // a stream opens: the lease starts again
        clock.Advance(TimeSpan.FromSeconds(4));
        target.ExpireLeases();
        Assert.Equal(TargetState.Receiving, target.State);

        clock.Advance(TimeSpan.FromSeconds(2));
        target.ExpireLeases();
        Assert.Equal(TargetState.Failed, target.State);
        var status = target.Status(new StatusRequest { MigrationId = "a" }, owner);
        Assert.Equal(MigrationOutcome.Discarded, status.Outcome);
        Assert.Contains("abandoned", status.Error, StringComparison.Ordinal);
        target.BeginAs("b");
    }

    [Fact]
    public void OutcomesOfEarlierMigrations_StayQueryable_ToTheirOwners()
    {
        using var target = Targets.New(new ScriptedSwitchover());
        var first = target.BeginAs("first");
        target.Complete(new CompleteRequest { MigrationId = "first" }, first);
        var second = target.BeginAs("second");
        MigrationOutcome OutcomeOf(string id, CallerCredentials caller) =>
            target.Status(new StatusRequest { MigrationId = id }, caller).Outcome;
        Assert.Equal(MigrationOutcome.Discarded, OutcomeOf("first", first));
        Assert.Equal(MigrationOutcome.Receiving, OutcomeOf("second", second));
        Assert.Equal(MigrationOutcome.Unknown, OutcomeOf("first", second));
        Assert.Equal(MigrationOutcome.Unknown, OutcomeOf("never", first));
    }
}
