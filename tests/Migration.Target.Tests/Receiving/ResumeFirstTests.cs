using Grpc.Core;
using Microsoft.Extensions.Time.Testing;
using Migration.Protocol;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;
using Migration.Target.Receiving;

namespace Migration.Target.Tests.Receiving;

/// <summary>
/// Resume-first switchover on the target's state machine: the guest runs before the decision, the decision waits for
/// Confirm, and nothing but a matching Confirm makes it the live copy (a mismatch, a silent source and a late call
/// each leave the copy discarded, with its VM stopped).
/// </summary>
public sealed class ResumeFirstTests
{
    private static CompleteRequest ResumeFirst(string id) => new() { MigrationId = id, ResumeFirst = true };

    private static ConfirmRequest Confirm(string id, bool ok) => new() { MigrationId = id, SelfCheckOk = ok };

    [Fact]
    public async Task TheGuestRunsBeforeTheDecision_WhichWaitsForAMatchingConfirm()
    {
        var switchover = new ScriptedSwitchover();
        using var target = Targets.New(switchover);
        var owner = target.BeginAs("a");

        var reply = target.Complete(ResumeFirst("a"), owner);
        Assert.True(reply.Provisional);
        Assert.False(reply.Resumed);
        Assert.Equal(VmRunState.Running, switchover.Prepared!.State);
        Assert.Equal(TargetState.Verifying, target.State);
        var status = target.Status(new StatusRequest { MigrationId = "a" }, owner);
        Assert.Equal(MigrationOutcome.Verifying, status.Outcome); // not "resumed": the source must not give up yet

        switchover.Release.Reset();
        var confirming = Task.Run(() => target.Confirm(Confirm("a", ok: true), owner));
        Assert.True(switchover.Entered.Wait(TimeSpan.FromSeconds(10)));
        target.ExpireLeases(); // neither a lease check nor a Cancel while Confirm decides takes the guest away
        Assert.False(target.Cancel(new CancelRequest { MigrationId = "a" }, owner).Cancelled);
        Assert.Equal(TargetState.Verifying, target.State);
        switchover.Release.Set();
        var confirmed = await confirming;

        Assert.True(confirmed.Verified);
        Assert.True(confirmed.Resumed);
        Assert.Equal(TargetState.Resumed, target.State);
        Assert.Equal(MigrationOutcome.Resumed,
            target.Status(new StatusRequest { MigrationId = "a" }, owner).Outcome);
        Assert.Equal(VmRunState.Running, switchover.Prepared.State);
    }

    [Fact]
    public void AConfirmThatDoesNotMatch_StopsAndDiscardsTheRunningCopy()
    {
        var switchover = new ScriptedSwitchover();
        using var target = Targets.New(switchover);
        var owner = target.BeginAs("a");
        target.Complete(ResumeFirst("a"), owner);

        var reply = target.Confirm(Confirm("a", ok: false), owner);

        Assert.False(reply.Verified);
        Assert.False(reply.Resumed);
        Assert.Equal(TargetState.Failed, target.State);
        Assert.NotEqual(VmRunState.Running, switchover.Prepared!.State);
        var status = target.Status(new StatusRequest { MigrationId = "a" }, owner);
        Assert.Equal(MigrationOutcome.Discarded, status.Outcome);
        target.BeginAs("b"); // and the target takes the next migration
    }

    [Fact]
    public void ACancelBeforeConfirm_DiscardsTheRunningCopy()
    {
        var switchover = new ScriptedSwitchover();
        using var target = Targets.New(switchover);
        var owner = target.BeginAs("a");
        target.Complete(ResumeFirst("a"), owner);

        var cancelled = target.Cancel(new CancelRequest { MigrationId = "a", Reason = "source failed" }, owner);

        Assert.True(cancelled.Cancelled);
        Assert.Equal(MigrationOutcome.Discarded, cancelled.Outcome);
        Assert.NotEqual(VmRunState.Running, switchover.Prepared!.State);
        Assert.Throws<RpcException>(() => target.Confirm(Confirm("a", ok: true), owner));
        target.BeginAs("b");
    }

    [Fact]
    public void AStatusQuestionDoesNotKeepAnUnconfirmedCopy()
    {
        var clock = new FakeTimeProvider();
        var options = TargetOptions.Defaults with { Lease = TimeSpan.FromSeconds(5) };
        using var target = Targets.New(new ScriptedSwitchover(), options, clock);
        var owner = target.BeginAs("a");
        target.Complete(ResumeFirst("a"), owner);
        for (int i = 0; i < 3; i++)
        {
            clock.Advance(TimeSpan.FromSeconds(2));
            target.Status(new StatusRequest { MigrationId = "a" }, owner); // a source that lost the reply, asking
        }

        target.ExpireLeases();
        Assert.Equal(TargetState.Failed, target.State);
    }

    [Fact]
    public void ASourceThatNeverConfirms_LosesTheCopyToTheLease_AndALateConfirmIsRefused()
    {
        var clock = new FakeTimeProvider();
        var options = TargetOptions.Defaults with { Lease = TimeSpan.FromSeconds(5) };
        using var target = Targets.New(new ScriptedSwitchover(), options, clock);
        var owner = target.BeginAs("a");
        target.Complete(ResumeFirst("a"), owner);
        clock.Advance(TimeSpan.FromSeconds(4));
        target.ExpireLeases();
        Assert.Equal(TargetState.Verifying, target.State);

        clock.Advance(TimeSpan.FromSeconds(2));
        target.ExpireLeases();

        Assert.Equal(TargetState.Failed, target.State);
        var status = target.Status(new StatusRequest { MigrationId = "a" }, owner);
        Assert.Equal(MigrationOutcome.Discarded, status.Outcome);
        Assert.Contains("no Confirm", status.Error, StringComparison.Ordinal);
        var late = Assert.Throws<RpcException>(() => target.Confirm(Confirm("a", ok: true), owner));
        Assert.Equal(StatusCode.FailedPrecondition, late.StatusCode);
    }

    [Fact]
    public void Confirm_IsRefusedWithoutAResumeFirstComplete_AndFromAnotherClient()
    {
        var switchover = new ScriptedSwitchover();
        using var target = Targets.New(switchover);
        var owner = target.BeginAs("a");
        var early = Assert.Throws<RpcException>(() => target.Confirm(Confirm("a", ok: true), owner));
        Assert.Equal(StatusCode.FailedPrecondition, early.StatusCode);

        target.Complete(ResumeFirst("a"), owner);
        var stranger = Assert.Throws<RpcException>(
            () => target.Confirm(Confirm("a", ok: true), new CallerCredentials("not-the-key", null)));
        Assert.Equal(StatusCode.Unauthenticated, stranger.StatusCode);
        Assert.Equal(TargetState.Verifying, target.State);
    }

    [Fact]
    public void ARehearsalComplete_ChangesNothing()
    {
        var switchover = new ScriptedSwitchover();
        using var target = Targets.New(switchover);
        var owner = target.BeginAs("a");

        var reply = target.Complete(new CompleteRequest { MigrationId = "a", Rehearsal = true }, owner);

        Assert.False(reply.Verified || reply.Resumed || reply.Provisional);
        Assert.Equal(1, switchover.Rehearsals);
        Assert.Equal(TargetState.Receiving, target.State);
        target.RequireReceiving("a", owner); // pages may still arrive
        var stranger = Assert.Throws<RpcException>(() => target.Complete(
            new CompleteRequest { MigrationId = "a", Rehearsal = true }, new CallerCredentials("x", null)));
        Assert.Equal(StatusCode.Unauthenticated, stranger.StatusCode);
    }
}
