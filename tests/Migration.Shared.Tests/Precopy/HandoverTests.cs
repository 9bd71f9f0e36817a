using Migration.Protocol;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.TestSupport;

namespace Migration.Shared.Tests.Precopy;

/// <summary>
/// The handover with one owner: when the Complete answer is lost, the source resumes its guest only on a definite
/// "the target did not and will not resume", completes on a definite "it resumed", and otherwise stays paused and
/// reports the outcome unknown. Real engine and guest; the target's answers are scripted.
/// </summary>
public sealed class HandoverTests
{
    private static readonly TimeSpan Window = TimeSpan.FromMilliseconds(600);

    private static (MigrationReport Report, VirtualMachine Vm, FakeTransport Transport) Migrate(
        Func<StatusReply> status, Func<CompleteReply>? complete = null, TimeSpan? window = null,
        Func<ConfirmRequest, CompleteReply>? confirm = null)
    {
        bool resumeFirst = confirm is not null; // the target speaks resume-first only in the tests that confirm
        var vm = WarmGuests.Idle();
        FakeTransport? transport = null;
        var seams = EngineSeams.Production with
        {
            Transport = (source, counters) => transport = new FakeTransport(source, counters, resumeFirst)
            {
                OnComplete = _ => complete?.Invoke() ?? throw new MigrationFailedException(FailureKind.Timeout,
                    "DeadlineExceeded: the reply did not arrive"),
                OnStatus = status,
                OnConfirm = confirm ?? (_ => throw new InvalidOperationException("verify-first never confirms")),
            },
        };
        var options = MigrationOptions.Defaults with
        {
            Target = new Uri("http://in-process"),
            HandoverWindow = window ?? Window,
            CompleteTimeout = TimeSpan.FromMilliseconds(100),
        };
        var report = new PrecopyEngine(vm, options, seams).MigrateAsync().WaitAsync(TimeSpan.FromSeconds(60))
            .GetAwaiter().GetResult();
        return (report, vm, transport!);
    }

    private static StatusReply Says(MigrationOutcome outcome, string error = "") =>
        new() { InstanceId = "fake", Outcome = outcome, Error = error };

    [Fact]
    public void ResumeFirst_ALostProvisionalReply_IsFollowedByConfirm_WhoseAnswerDecides()
    {
        ConfirmRequest? sent = null;
        var (report, vm, transport) = Migrate(() => Says(MigrationOutcome.Verifying), confirm: request =>
        {
            sent = request;
            return new CompleteReply { Verified = true, Resumed = true, GuestSelfCheck = "ok" };
        });
        using var _ = vm;
        Assert.Equal(MigrationStatus.Completed, report.Status);
        Assert.Equal(["complete", "confirm"], transport.Calls.Where(c => c is "complete" or "confirm"));
        Assert.Equal(VmRunState.Paused, vm.State);
        Assert.True(sent!.SelfCheckOk);
        Assert.Equal((long)sent.DigestPages, report.Guest.InUsePages);
    }

    [Fact]
    public void ResumeFirst_AConfirmThatDoesNotVerify_FailsAndTheGuestResumesHere()
    {
        var (report, vm, _) = Migrate(() => Says(MigrationOutcome.Discarded),
            complete: () => new CompleteReply { Provisional = true },
            confirm: _ => new CompleteReply { Error = "1 page(s) differ from the source", MismatchedPages = 1 });
        using var _ = vm;
        Assert.Equal(MigrationStatus.Failed, report.Status);
        Assert.Contains("differ", report.Error, StringComparison.Ordinal);
        Assert.Equal(VmRunState.Running, vm.State);
    }

    [Fact]
    public void ALostReply_TheTargetResumed_CompletesAndTheSourceStaysPaused()
    {
        var (report, vm, _) = Migrate(() => Says(MigrationOutcome.Resumed));
        using var _ = vm;
        Assert.Equal(MigrationStatus.Completed, report.Status);
        Assert.True(report.Verified);
        Assert.Contains("resumed the guest", report.Handover, StringComparison.Ordinal);
        Assert.Equal(VmRunState.Paused, vm.State);
    }

    [Fact]
    public void ALostReply_TheTargetDiscardedIt_FailsAndTheGuestResumesHere()
    {
        var (report, vm, _) = Migrate(() => Says(MigrationOutcome.Discarded, "digests differ"));
        using var _ = vm;
        Assert.Equal(MigrationStatus.Failed, report.Status);
        Assert.Contains("digests differ", report.Error, StringComparison.Ordinal);
        Assert.Equal(VmRunState.Running, vm.State);
    }

    [Fact]
    public void ALostRequest_TheTargetStillReceiving_IsCancelled_AndTheGuestResumesHere()
    {
        var (report, vm, transport) = Migrate(() => Says(MigrationOutcome.Receiving));
        using var _ = vm;
        Assert.Equal(MigrationStatus.Failed, report.Status);
        Assert.Contains("never reached the target", report.Error, StringComparison.Ordinal);
        Assert.Contains(transport.Calls,
            c => c.StartsWith("cancel: the completion did not arrive", StringComparison.Ordinal));
        Assert.Equal(VmRunState.Running, vm.State);
    }

    [Fact]
    public void AVerifyingTarget_IsAskedAgain_UntilItDecides()
    {
        int asked = 0;
        var (report, vm, transport) =
            Migrate(() => Says(++asked < 3 ? MigrationOutcome.Verifying : MigrationOutcome.Resumed),
                window: TimeSpan.FromSeconds(10));
        using var _ = vm;
        Assert.Equal(MigrationStatus.Completed, report.Status);
        Assert.True(transport.Calls.Count(c => c == "status") >= 3);
    }

    [Fact]
    public void NoAnswerInTheWindow_IsUnknown_AndTheSourceNeverResumes()
    {
        var (report, vm, transport) =
            Migrate(() => throw new MigrationFailedException(FailureKind.ConnectionLost, "Unavailable: gone"));
        using var _ = vm;
        Assert.Equal(MigrationStatus.Unknown, report.Status);
        Assert.Contains("outcome unknown", report.Error, StringComparison.Ordinal);
        Assert.Contains("stays paused", report.Error, StringComparison.Ordinal);
        Assert.Contains(report.MigrationId!, report.Error, StringComparison.Ordinal); // what to ask the target for
        Assert.Equal(VmRunState.Paused, vm.State);
        Assert.DoesNotContain(transport.Calls, c => c.StartsWith("cancel", StringComparison.Ordinal));
    }

    [Fact]
    public void ADifferentTargetProcess_AtTheAddress_IsUnknown_NotPermission()
    {
        var (report, vm, _) = Migrate(() => new StatusReply { InstanceId = "someone-else" });
        using var _ = vm;
        Assert.Equal(MigrationStatus.Unknown, report.Status);
        Assert.Contains("different target process", report.Error, StringComparison.Ordinal);
        Assert.Equal(VmRunState.Paused, vm.State);
    }

    [Fact]
    public void AReplyThatSaysNotVerified_IsDefinite_AndTheGuestResumes()
    {
        var (report, vm, transport) = Migrate(() => Says(MigrationOutcome.Unknown),
            () => new CompleteReply { Error = "1 page(s) differ" });
        using var _ = vm;
        Assert.Equal(MigrationStatus.Failed, report.Status);
        Assert.DoesNotContain("status", transport.Calls); // no need to ask
        Assert.Equal(VmRunState.Running, vm.State);
    }
}
