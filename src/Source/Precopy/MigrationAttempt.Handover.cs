using Migration.Protocol;
using Migration.Shared.Reporting;

namespace Migration.Source.Precopy;

internal sealed partial class MigrationAttempt
{
    /// <summary>
    /// Hands the guest over: the target rebuilds the VM, compares digests, runs the guest's self-check and only then
    /// resumes it; its reply ends the downtime. After a verified reply this copy must never run again: the engine
    /// leaves it paused and its caller shuts it down.
    /// </summary>
    private async Task HandOverAsync(CompleteRequest completion, CancellationToken ct)
    {
        var phases = _report.Timing.DowntimePhasesMs;
        long sent = _time.GetTimestamp();
        var reply = await _transport.CompleteAsync(completion, ct).ConfigureAwait(false);
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

        foreach (var participant in _joined)
        {
            participant.Cleanup(MigrationStatus.Completed);
        }

        _vm.DirtyLog.Disable();
        _report.Ended(MigrationStatus.Completed, error: null);
        PrecopyLog.Completed(_log, _id, _report.Timing.DowntimeMs);
    }
}
