using System.Buffers;
using Migration.Shared.Transport;

namespace Migration.Shared.Precopy;

internal sealed partial class MigrationAttempt
{
    /// <summary>
    /// Precopy rounds: send every page in the bitmap, sync, measure, and ask the convergence policy whether to go on,
    /// stop and copy, or give up (QEMU's <c>migration_iteration_run</c> and <c>migration_should_complete</c>).
    /// </summary>
    private async Task RunRoundsAsync(CancellationToken ct)
    {
        var stats = _stats!;
        long previousRemaining = _vm.Ram.PageCount;
        for (int round = 0; ; round++)
        {
            _round = round;
            long roundStart = _time.GetTimestamp();
            long bytesBefore = _counters.BytesOnWire;
            long dataBefore = _counters.PagesWithData;
            long dirtyAtStart = _bitmap.Remaining;
            long sent = await SendRoundAsync((uint)round, ct).ConfigureAwait(false);
            double seconds = _time.GetElapsedTime(roundStart).TotalSeconds;
            long bytes = _counters.BytesOnWire - bytesBefore;
            _stall.Arm($"asking the target what it took of round {round}");
            long inFlight = await _transport.PagesReceivedAsync(_id, ct).ConfigureAwait(false) is long taken
                ? Math.Max(_counters.PagesSent - taken, 0)
                : 0;
            _stall.Disarm();
            stats.RecordRound(sent, bytes, _counters.PagesWithData - dataBefore, seconds, inFlight);

            long syncStart = _time.GetTimestamp();
            _sync!.Run(vmRunning: true); // what did the guest dirty while we sent?
            long synced = _time.GetTimestamp();
            _cost.RecordSync(_time.GetElapsedTime(syncStart, synced).TotalMilliseconds);
            stats.RecordSync(_vm.DirtyLog.PagesLogged, synced, _time);
            var outcome = Outcome(round, previousRemaining, stats);
            var decision = _policy.Decide(outcome);
            if (_rehearses && (decision is ConvergenceDecision.StopAndCopy
                || outcome.PagesMs + _cost.SyncMs <= _options.DowntimeLimit.TotalMilliseconds))
            {
                // About to stop, or held back only by the switchover's fixed cost: measure that again, as the machine
                // is now (a sample taken in a busy moment must not keep precopy going for good), take in what the
                // guest dirtied meanwhile (the final send will carry it), and decide anew.
                await RehearseSwitchoverAsync(unrecorded: 0, samples: 1, ct).ConfigureAwait(false);
                _sync.Run(vmRunning: true);
                stats.RecordSync(_vm.DirtyLog.PagesLogged, _time.GetTimestamp(), _time);
                outcome = Outcome(round, previousRemaining, stats);
                decision = _policy.Decide(outcome);
            }

            previousRemaining = outcome.RemainingPages;
            _report.AddRound(round, dirtyAtStart, sent, bytes, seconds * 1000, stats.DirtyPagesPerSecond, final: false);
            Report(round, outcome.ExpectedDowntimeMs);
            _metrics.Rounds.Add(1);
            _metrics.PagesRemaining.Record(outcome.RemainingPages);
            _metrics.DirtyRate.Record(stats.DirtyPagesPerSecond);
            _metrics.Throughput.Record(stats.BytesPerSecond);
            _metrics.ExpectedDowntime.Record(outcome.ExpectedDowntimeMs);

            PrecopyLog.RoundDecided(_log, _id, round, sent, outcome.RemainingPages, stats.DirtyPagesPerSecond,
                stats.DataPagesPerSecond, outcome.ExpectedDowntimeMs, decision.ToString());
            switch (decision)
            {
                case ConvergenceDecision.StopAndCopy stop:
                    _report.Timing.ExpectedDowntimeMs = stop.ExpectedDowntimeMs;
                    _report.Timing.ExpectedDowntimePhasesMs = _cost.Phases(outcome.PagesMs);
                    return;
                case ConvergenceDecision.NotConverging give:
                    throw new MigrationFailedException(FailureKind.NotConverging, give.Reason);
            }
        }
    }

    /// <summary>What precopy knows after a round's sync, with the switchover's fixed cost as last measured.</summary>
    private RoundOutcome Outcome(int round, long previousRemaining, RoundStats stats) =>
        new(round, _bitmap.Remaining, previousRemaining, stats.CautiousDataPagesPerSecond, stats.DirtyPagesPerSecond,
            stats.BytesPerSecond, _time.GetElapsedTime(_start), _cost.FixedMs);

    /// <summary>
    /// Sends every page set in the bitmap (each taken out of it, its manual-mode chunk re-armed, before it is queued),
    /// then waits until every channel has written the round: a page's newer copy can then never overtake an older one
    /// on another channel (R11). Returns the pages sent.
    /// </summary>
    private async Task<long> SendRoundAsync(uint round, CancellationToken ct)
    {
        _stall.Arm(Phase == MigrationPhase.Precopy ? $"sending round {round}" : "sending the last pages");
        long sent = 0;
        int next = 0;
        long cursor = 0;
        while (cursor >= 0)
        {
            long[] batch = ArrayPool<long>.Shared.Rent(_options.PagesPerBatch);
            int count = _bitmap.TakeBatch(batch.AsSpan(0, _options.PagesPerBatch), ref cursor);
            if (count == 0)
            {
                ArrayPool<long>.Shared.Return(batch);
                break;
            }

            await _channels[next].EnqueueAsync(new PageWorkItem(batch, count, round), ct).ConfigureAwait(false);
            next = (next + 1) % _channels.Count;
            sent += count;
            _points.Yield();
        }

        await Task.WhenAll(_channels.Select(c => c.BarrierAsync(ct))).ConfigureAwait(false);
        _stall.Disarm();
        return sent;
    }
}
