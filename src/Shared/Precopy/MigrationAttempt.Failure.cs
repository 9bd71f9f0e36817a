using Migration.Shared.Machine;
using Migration.Shared.Protocol;

namespace Migration.Shared.Precopy;

internal sealed partial class MigrationAttempt
{
    /// <summary>
    /// Whether <paramref name="ex"/> is a failure the migration can meet: the transport's failures, which reach the
    /// engine as <see cref="MigrationFailedException"/>s, and the attempt's own cancellations (its timeout, the stall
    /// watchdog, the user). Anything else is a bug (<see cref="EndOnBugAsync"/>).
    /// </summary>
    private static bool IsMigrationFailure(Exception ex) =>
        ex is MigrationFailedException or OperationCanceledException;

    /// <summary>
    /// A bug ended the attempt: its stack goes to the log, and the report calls it an internal error rather than a
    /// lost connection. Before the handover the guest resumes as on any failure (the target cannot resume it without
    /// the completion). During the handover the target may already run it, so this copy stays paused and the outcome
    /// is unknown, as for a lost reply that could not be resolved.
    /// </summary>
    private async Task EndOnBugAsync(Exception bug)
    {
        PrecopyLog.InternalError(_log, _id, Where, bug);
        string error = $"internal error during {Where}: {bug.GetType().Name}: {bug.Message} (a bug; the log has its " +
            "stack)";
        if (Phase == MigrationPhase.Handover)
        {
            await EndUnknownAsync(error, FailureKind.Internal).ConfigureAwait(false);
        }
        else
        {
            await FailAsync(new MigrationFailedException(FailureKind.Internal, error, bug)).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The failure <paramref name="ex"/> stands for: the user's cancel, the failure itself, or (a cancellation) a lost
    /// connection with the exception's text.
    /// </summary>
    private static MigrationFailedException FailureOf(Exception ex, bool cancelledByUser) => cancelledByUser
        ? new MigrationFailedException(FailureKind.Cancelled, "cancelled on request", ex)
        : ex as MigrationFailedException ?? new MigrationFailedException(FailureKind.ConnectionLost, ex.Message, ex);

    /// <summary>
    /// Ends a failed or cancelled attempt without costing the guest: the target hears why (Cancel) before the streams
    /// reset, every participant cleans up (H6: the hint device reports DONE, so the guest gives its held blocks back),
    /// dirty logging goes off, and a guest paused for stop-and-copy resumes.
    /// </summary>
    private async Task FailAsync(MigrationFailedException failure)
    {
        var status = failure.Kind == FailureKind.Cancelled ? MigrationStatus.Cancelled : MigrationStatus.Failed;
        var phase = status == MigrationStatus.Cancelled ? MigrationPhase.Cancelled : MigrationPhase.Failed;
        PrecopyLog.Ended(_log, _id, phase, failure.Kind, failure.Message);
        Phase = phase;
        _report.Ended(status, failure.Message);
        await _transport.CancelAsync(_id, failure.Message).ConfigureAwait(false);
        await _streams.CancelAsync().ConfigureAwait(false);
        foreach (var participant in _joined)
        {
            participant.Cleanup(status);
        }

        _vm.DirtyLog.Disable();
        _slowdown.Lift(); // before the guest runs on: at full speed
        if (_paused && _vm.State == VmRunState.Paused)
        {
            _vm.Resume(); // the source guest keeps running
        }

        if (_downtimeStart != 0 && _report.Timing.DowntimeMs == 0)
        {
            _report.Timing.DowntimeMs = _time.GetElapsedTime(_downtimeStart).TotalMilliseconds;
        }
    }
}
