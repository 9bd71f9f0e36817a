using Migration.Protocol;
using Migration.Shared.Reporting;

namespace Migration.Source.Precopy;

internal sealed partial class MigrationAttempt
{
    /// <summary>
    /// Hands the guest over: the target rebuilds the VM, checks the state digest and the page digests, runs the guest's
    /// self-check, records its decision and only then resumes it; its reply ends the downtime. A reply is definite
    /// either way. Without one (lost, late, a broken connection) the source asks the target what it decided
    /// (<see cref="HandoverResolver"/>) and never guesses: it resumes its own guest only when the target did not and
    /// will not resume, and stays paused when that cannot be learned. The user's cancel does not apply here.
    /// </summary>
    private async Task HandOverAsync(CompleteRequest completion)
    {
        var phases = _report.Timing.DowntimePhasesMs;
        long sent = _time.GetTimestamp();
        CompleteReply reply;
        try
        {
            reply = await _transport.CompleteAsync(completion, _options.CompleteTimeout, CancellationToken.None)
                .ConfigureAwait(false);
        }
        catch (Exception ex) when (MigrationFailedException.IsMigrationFailure(ex))
        {
            string cause = ex is Grpc.Core.RpcException { StatusCode: Grpc.Core.StatusCode.DeadlineExceeded }
                ? $"no answer to Complete within {_options.CompleteTimeout.TotalSeconds:0.#} s (--complete-timeout)"
                : "no answer to Complete: " + MigrationFailedException.From(ex, cancelledByUser: false).Message;
            var resolver = new HandoverResolver(_transport, _id, _targetInstance, _time, _options.HandoverWindow);
            var outcome = await resolver.ResolveAsync(cause).ConfigureAwait(false);
            _report.Timing.DowntimeMs = _time.GetElapsedTime(_downtimeStart).TotalMilliseconds;
            switch (outcome)
            {
                case HandoverOutcome.TargetResumed resumed:
                    _report.Report.Verified = true; // the target resumes only a guest that verified
                    _report.Report.Handover = resumed.How;
                    _report.Report.Verification.GuestSelfCheck = "passed on the target (its reply was lost)";
                    Finish();
                    return;
                case HandoverOutcome.TargetWillNotResume notResumed:
                    throw new MigrationFailedException(FailureKind.ConnectionLost, notResumed.Why, ex);
                default:
                    throw new HandoverUnknownException(((HandoverOutcome.Unknown)outcome).Why);
            }
        }

        _report.Timing.DowntimeMs = _time.GetElapsedTime(_downtimeStart).TotalMilliseconds;
        double rpc = _time.GetElapsedTime(sent).TotalMilliseconds;
        foreach (var (name, ms) in reply.PhasesMs)
        {
            phases["target" + char.ToUpperInvariant(name[0]) + name[1..]] = ms;
            rpc -= ms;
        }

        phases["rpc"] = Math.Max(rpc, 0); // the round trip minus the target's own work
        var verification = _report.Report.Verification;
        verification.PagesCompared = (long)reply.PagesCompared;
        verification.MismatchedPages = (long)reply.MismatchedPages;
        verification.GuestSelfCheck = reply.GuestSelfCheck;
        verification.FirstMismatchedPages = [.. reply.FirstMismatches.Select(p => (long)p)];
        _report.Report.Verified = reply.Verified && reply.Resumed;
        if (!_report.Report.Verified)
        {
            throw new MigrationFailedException(FailureKind.VerificationFailed,
                $"target did not verify the guest: {reply.Error}");
        }

        Finish();
    }

    /// <summary>The target runs the guest: this copy never runs again (the engine leaves it paused).</summary>
    private void Finish()
    {
        foreach (var participant in _joined)
        {
            participant.Cleanup(MigrationStatus.Completed);
        }

        _vm.DirtyLog.Disable();
        _report.Ended(MigrationStatus.Completed, error: null);
        PrecopyLog.Completed(_log, _id, _report.Timing.DowntimeMs);
    }

    /// <summary>
    /// No definite answer: the guest may run on the target, so this copy stays paused and nothing is undone on the
    /// target's side. The report says what happened and what the operator can do.
    /// </summary>
    private Task EndUnknownAsync(string why)
    {
        Phase = MigrationPhase.Unknown;
        string error = $"handover outcome unknown: {why}. The source guest stays paused, since it may be running on " +
            $"the target. Ask the target at {_options.Target} for migration {_id} (Status with that id and its key): " +
            "if it resumed the guest, discard this copy; if it discarded the migration, this copy may be resumed.";
        PrecopyLog.Ended(_log, _id, MigrationPhase.Unknown, FailureKind.ConnectionLost, error);
        _report.Ended(MigrationStatus.Unknown, error);
        foreach (var participant in _joined)
        {
            participant.Cleanup(MigrationStatus.Unknown);
        }

        _vm.DirtyLog.Disable();
        _report.Timing.DowntimeMs = _time.GetElapsedTime(_downtimeStart).TotalMilliseconds;
        return Task.CompletedTask;
    }
}

/// <summary>The handover ended without a definite answer; the attempt ends <c>unknown</c>, the guest paused.</summary>
internal sealed class HandoverUnknownException(string message) : Exception(message);
