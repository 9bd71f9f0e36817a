using Migration.Shared.Machine;
using Migration.Shared.Protocol;

namespace Migration.Shared.Precopy;

internal sealed partial class MigrationAttempt
{
    /// <summary>
    /// Whether the attempt fails cleanly on <paramref name="ex"/> (rather than surfacing a bug): the transport's
    /// failures, which reach the engine as <see cref="MigrationFailedException"/>s, and the attempt's own cancellations
    /// (its timeout, the stall watchdog, the user).
    /// </summary>
    private static bool IsMigrationFailure(Exception ex) =>
        ex is MigrationFailedException or OperationCanceledException or InvalidOperationException;

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
