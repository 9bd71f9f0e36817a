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
            long dataBefore = _counters.PagesRaw + _counters.PagesLz4;
            long dirtyAtStart = _bitmap.Remaining;
            long sent = await SendRoundAsync((uint)round, ct).ConfigureAwait(false);
            double seconds = _time.GetElapsedTime(roundStart).TotalSeconds;
            long bytes = _counters.BytesOnWire - bytesBefore;
            stats.RecordRound(sent, bytes, _counters.PagesRaw + _counters.PagesLz4 - dataBefore, seconds);

            _sync!.Run(vmRunning: true); // what did the guest dirty while we sent?
            stats.RecordSync(_vm.DirtyLog.PagesLogged, _time.GetTimestamp(), _time);
            var outcome = new RoundOutcome(round, _bitmap.Remaining, previousRemaining, stats.DataPagesPerSecond,
                stats.DirtyPagesPerSecond, stats.BytesPerSecond, _time.GetElapsedTime(_start), _fixedSwitchoverMs);
            previousRemaining = outcome.RemainingPages;
            _report.AddRound(round, dirtyAtStart, sent, bytes, seconds * 1000, stats.DirtyPagesPerSecond, final: false);
            Report(round, outcome.ExpectedDowntimeMs);
            _metrics.Rounds.Add(1);
            _metrics.PagesRemaining.Record(outcome.RemainingPages);
            _metrics.DirtyRate.Record(stats.DirtyPagesPerSecond);
            _metrics.Throughput.Record(stats.BytesPerSecond);
            _metrics.ExpectedDowntime.Record(outcome.ExpectedDowntimeMs);

            var decision = _policy.Decide(outcome);
            PrecopyLog.RoundDecided(_log, _id, round, sent, outcome.RemainingPages, stats.DirtyPagesPerSecond,
                stats.DataPagesPerSecond, outcome.ExpectedDowntimeMs, decision.ToString());
            switch (decision)
            {
                case ConvergenceDecision.StopAndCopy stop:
                    _report.Timing.ExpectedDowntimeMs = stop.ExpectedDowntimeMs;
                    return;
                case ConvergenceDecision.NotConverging give:
                    throw new MigrationFailedException(FailureKind.NotConverging, give.Reason);
            }
        }
    }

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
