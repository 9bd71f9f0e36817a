using Grpc.Core;
using Migration.Protocol;
using Migration.Shared.Protocol;

namespace Migration.Target.Tests.Receiving;

/// <summary>The target's state machine: every transition, and the windows where two calls meet.</summary>
public sealed class IncomingMigrationsTests
{
    [Fact]
    public void Begin_MovesIdleToReceiving_AndABusyTargetRefusesASecondBegin()
    {
        using var target = Targets.New(new ScriptedSwitchover());
        Assert.Equal(TargetState.Idle, target.State);
        target.Begin(Targets.Begin("a"));
        Assert.Equal(TargetState.Receiving, target.State);
        Assert.Equal("receiving", target.Status().State);

        var busy = Assert.Throws<RpcException>(() => target.Begin(Targets.Begin("b")));
        Assert.Equal(StatusCode.FailedPrecondition, busy.StatusCode);
        Assert.Contains("busy with migration a", busy.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void Cancel_DiscardsAReceivingMigration_AndTheNextBeginIsAccepted()
    {
        using var target = Targets.New(new ScriptedSwitchover());
        target.Begin(Targets.Begin("a"));
        Assert.True(target.Cancel(new CancelRequest { MigrationId = "a", Reason = "user" }).Cancelled);
        Assert.Equal(TargetState.Failed, target.State);
        Assert.Contains("cancelled by the source: user", target.Status().Error, StringComparison.Ordinal);

        Assert.False(target.Cancel(new CancelRequest { MigrationId = "a" }).Cancelled); // nothing left to cancel
        target.Begin(Targets.Begin("b"));
        Assert.Equal(TargetState.Receiving, target.State);
    }

    [Fact]
    public void CancelOfAnotherMigration_IsRefused()
    {
        using var target = Targets.New(new ScriptedSwitchover());
        target.Begin(Targets.Begin("a"));
        Assert.False(target.Cancel(new CancelRequest { MigrationId = "someone-else" }).Cancelled);
        Assert.Equal(TargetState.Receiving, target.State);
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
        target.Begin(Targets.Begin("a"));

        var complete = Task.Run(() => target.Complete(new CompleteRequest { MigrationId = "a" }));
        Assert.True(switchover.Entered.Wait(TimeSpan.FromSeconds(30)), "the switchover never started");
        Assert.Equal(TargetState.Verifying, target.State);
        Assert.False(target.Cancel(new CancelRequest { MigrationId = "a", Reason = "late" }).Cancelled);
        Assert.Equal(TargetState.Verifying, target.State);
        var busy = Assert.Throws<RpcException>(() => target.Begin(Targets.Begin("b")));
        Assert.Equal(StatusCode.FailedPrecondition, busy.StatusCode);

        switchover.Release.Set();
        var reply = await complete.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(reply.Verified);
        Assert.Equal(TargetState.Failed, target.State);
        target.Begin(Targets.Begin("b"));
        Assert.Equal(TargetState.Receiving, target.State);
    }

    [Fact]
    public void CompleteAfterCancel_IsRefused_AndTheTargetTakesTheNextBegin()
    {
        using var target = Targets.New(new ScriptedSwitchover());
        target.Begin(Targets.Begin("a"));
        Assert.True(target.Cancel(new CancelRequest { MigrationId = "a" }).Cancelled);
        var refused = Assert.Throws<RpcException>(() => target.Complete(new CompleteRequest { MigrationId = "a" }));
        Assert.Equal(StatusCode.FailedPrecondition, refused.StatusCode);
        target.Begin(Targets.Begin("b"));
    }

    [Fact]
    public void ASwitchoverThatThrows_EndsFailed_NeverStuckVerifying()
    {
        var switchover = new ScriptedSwitchover { Result = (_, _) => throw new ObjectDisposedException("ram") };
        using var target = Targets.New(switchover);
        target.Begin(Targets.Begin("a"));

        var reply = target.Complete(new CompleteRequest { MigrationId = "a" });

        Assert.False(reply.Verified);
        Assert.Contains("switchover failed", reply.Error, StringComparison.Ordinal);
        Assert.Equal(TargetState.Failed, target.State);
        target.Begin(Targets.Begin("b"));
    }

    [Fact]
    public void ASecondComplete_IsRefused()
    {
        using var target = Targets.New(new ScriptedSwitchover());
        target.Begin(Targets.Begin("a"));
        target.Complete(new CompleteRequest { MigrationId = "a" });
        var again = Assert.Throws<RpcException>(() => target.Complete(new CompleteRequest { MigrationId = "a" }));
        Assert.Equal(StatusCode.FailedPrecondition, again.StatusCode);
    }

    [Fact]
    public void PagesOfAMigrationThatIsNotReceiving_AreRefused()
    {
        using var target = Targets.New(new ScriptedSwitchover());
        Assert.Equal(StatusCode.FailedPrecondition,
            Assert.Throws<RpcException>(() => target.RequireReceiving("a")).StatusCode);
        target.Begin(Targets.Begin("a"));
        Assert.Equal(StatusCode.FailedPrecondition,
            Assert.Throws<RpcException>(() => target.RequireReceiving("b")).StatusCode);
        var migration = target.RequireReceiving("a");
        Assert.True(target.Fail(migration, "bad batch"));
        Assert.False(target.Fail(migration, "twice")); // a second failure of the same migration changes nothing
        Assert.Equal(StatusCode.FailedPrecondition,
            Assert.Throws<RpcException>(() => target.RequireReceiving("a")).StatusCode);
    }

    [Fact]
    public async Task AStreamThatFailsWhileTheMigrationVerifies_ChangesNothing()
    {
        var switchover = new ScriptedSwitchover();
        switchover.Release.Reset();
        using var target = Targets.New(switchover);
        target.Begin(Targets.Begin("a"));
        var migration = target.RequireReceiving("a");
        var complete = Task.Run(() => target.Complete(new CompleteRequest { MigrationId = "a" }));
        Assert.True(switchover.Entered.Wait(TimeSpan.FromSeconds(30)));

        Assert.False(target.Fail(migration, "late stream error"));
        Assert.Equal(TargetState.Verifying, target.State);
        switchover.Release.Set();
        await complete.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(TargetState.Failed, target.State);
    }
}
