using Migration.Protocol;
using Migration.Shared.Protocol;

namespace Migration.Shared.Precopy;

internal sealed partial class MigrationAttempt
{
    /// <summary>
    /// Hands the guest over. Verify-first: the target rebuilds the VM, checks the state digest and the page digests,
    /// runs the guest's self-check, records its decision and only then resumes it; its reply ends the downtime.
    /// Resume-first: the target checks the state digest, rebuilds and resumes the guest with its outputs held, and its
    /// provisional reply ends the downtime; this guest stays paused while its digests and self-check go to the target
    /// (Confirm), whose reply is the decision; a lost provisional reply is followed by Confirm all the same (a target
    /// that never took Complete refuses it). A definite reply is definite either way. Without one (lost, late, a
    /// broken connection) the source asks the target what it decided (<see cref="HandoverResolver"/>) and never
    /// guesses: it resumes its own guest only when the target did not and will not resume, and stays paused when that
    /// cannot be learned. The user's cancel does not apply here.
    /// </summary>
    private async Task HandOverAsync(CompleteRequest completion)
    {
        var downtime = _downtime!; // started at the pause (StopAndCopyAsync)
        CompleteReply? reply;
        if (completion.ResumeFirst)
        {
            reply = await TryAskAsync(
                () => _transport.CompleteAsync(completion, _options.CompleteTimeout, CancellationToken.None),
                downtime).ConfigureAwait(false);
            _report.Timing.DowntimeMs = downtime.ElapsedMs;
            if (reply is null or { Provisional: true })
            {
                var confirmation = BuildConfirmation(out var afterResume);
                reply = await AskTargetAsync(
                    () => _transport.ConfirmAsync(confirmation, _options.CompleteTimeout, CancellationToken.None),
                    "Confirm", afterResume, _report.Timing.AfterResumePhasesMs, downtimeEnds: false)
                    .ConfigureAwait(false);
            }
        }
        else
        {
            reply = await AskTargetAsync(
                () => _transport.CompleteAsync(completion, _options.CompleteTimeout, CancellationToken.None),
                "Complete", downtime, _report.Timing.DowntimePhasesMs, downtimeEnds: true).ConfigureAwait(false);
        }

        if (reply is null)
        {
            return; // resolved through the target's record of its decision
        }

        var verification = _report.Report.Verification;
        verification.PagesCompared = (long)reply.PagesCompared;
        verification.MismatchedPages = (long)reply.MismatchedPages;
        verification.GuestSelfCheck = completion.ResumeFirst ? $"{reply.GuestSelfCheck} (on the stopped source)"
            : reply.GuestSelfCheck;
        verification.FirstMismatchedPages = [.. reply.FirstMismatches.Select(p => (long)p)];
        _report.Report.Verified = reply.Verified && reply.Resumed;
        if (!_report.Report.Verified)
        {
            throw new MigrationFailedException(FailureKind.VerificationFailed,
                $"target did not verify the guest: {reply.Error}");
        }

        Finish();
    }

    /// <summary>
    /// A resume-first Complete: its reply with the phases recorded, or null when it was lost (the wait then shows as
    /// the downtime's "completeUnanswered").
    /// </summary>
    private async Task<CompleteReply?> TryAskAsync(Func<Task<CompleteReply>> call, PhaseTimer downtime)
    {
        try
        {
            var reply = await call().ConfigureAwait(false);
            RecordPhases(reply, downtime, _report.Timing.DowntimePhasesMs);
            return reply;
        }
        catch (Exception ex) when (IsMigrationFailure(ex))
        {
            downtime.Next("completeUnanswered");
            PrecopyLog.CompleteReplyLost(_log, _id, ex.Message);
            return null;
        }
    }

    /// <summary>
    /// Closes the call's phase on <paramref name="timer"/> and splits it: the target's own phases (prefixed "target")
    /// and "rpc", the rest of the round trip, so the phases add up to the time the timer measured.
    /// </summary>
    private static void RecordPhases(CompleteReply reply, PhaseTimer timer, Dictionary<string, double> phases)
    {
        double rpc = timer.Lap();
        foreach (var (phase, ms) in reply.PhasesMs)
        {
            phases["target" + char.ToUpperInvariant(phase[0]) + phase[1..]] = ms;
            rpc -= phase == "heldOutputs" ? 0 : ms; // held since the resume, most of it before this call
        }

        phases["rpc"] = Math.Max(rpc, 0); // the round trip minus the target's own work
    }

    /// <summary>
    /// One handover call. Returns its reply, with the target's phases (prefixed "target") and the round trip minus
    /// them ("rpc") recorded; or null when the reply was lost and the target's record says it resumed the guest (the
    /// attempt is then finished). Throws when the target will not resume it, or when that cannot be learned.
    /// </summary>
    private async Task<CompleteReply?> AskTargetAsync(Func<Task<CompleteReply>> call, string name, PhaseTimer timer,
        Dictionary<string, double> phases, bool downtimeEnds)
    {
        CompleteReply reply;
        try
        {
            reply = await call().ConfigureAwait(false);
        }
        catch (Exception ex) when (IsMigrationFailure(ex))
        {
            string cause = ex is MigrationFailedException { Kind: FailureKind.Timeout }
                ? $"no answer to {name} within {_options.CompleteTimeout.TotalSeconds:0.#} s (--complete-timeout)"
                : $"no answer to {name}: " + FailureOf(ex, cancelledByUser: false).Message;
            timer.Next(char.ToLowerInvariant(name[0]) + name[1..] + "Unanswered");
            var resolver = new HandoverResolver(_transport, _id, _targetInstance, _time, _options.HandoverWindow);
            var outcome = await resolver.ResolveAsync(cause).ConfigureAwait(false);
            timer.Next("handoverResolution");
            if (downtimeEnds)
            {
                _report.Timing.DowntimeMs = timer.ElapsedMs;
            }

            switch (outcome)
            {
                case HandoverOutcome.TargetResumed resumed:
                    _report.Report.Verified = true; // the target resumes only a guest that verified
                    _report.Report.Handover = resumed.How;
                    _report.Report.Verification.GuestSelfCheck = "verified by the target (its reply was lost)";
                    Finish();
                    return null;
                case HandoverOutcome.TargetWillNotResume notResumed:
                    throw new MigrationFailedException(FailureKind.ConnectionLost, notResumed.Why, ex);
                default:
                    throw new HandoverUnknownException(((HandoverOutcome.Unknown)outcome).Why);
            }
        }

        RecordPhases(reply, timer, phases);
        if (downtimeEnds)
        {
            _report.Timing.DowntimeMs = timer.ElapsedMs;
        }

        return reply;
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
    private Task EndUnknownAsync(string why, FailureKind kind = FailureKind.ConnectionLost)
    {
        Phase = MigrationPhase.Unknown;
        string error = $"handover outcome unknown: {why}. The source guest stays paused, since it may be running on " +
            $"the target. Ask the target at {_options.Target} for migration {_id} (Status with that id and its key): " +
            "if it resumed the guest, discard this copy; if it discarded the migration, this copy may be resumed.";
        PrecopyLog.Ended(_log, _id, MigrationPhase.Unknown, kind, error);
        _report.Ended(MigrationStatus.Unknown, error);
        foreach (var participant in _joined)
        {
            participant.Cleanup(MigrationStatus.Unknown);
        }

        _vm.DirtyLog.Disable();
        if (_downtime is { } downtime && _report.Timing.DowntimeMs == 0)
        {
            downtime.Next("unresolved");
            _report.Timing.DowntimeMs = downtime.ElapsedMs;
        }

        return Task.CompletedTask;
    }
}

/// <summary>The handover ended without a definite answer; the attempt ends <c>unknown</c>, the guest paused.</summary>
internal sealed class HandoverUnknownException(string message) : Exception(message);
