using System.Buffers;
using System.Text.Json;
using Migration.Shared.Guest;
using Migration.Shared.Reporting;
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
        long loggedBefore = _vm.DirtyLog.PagesLogged;
        for (int round = 0; ; round++)
        {
            _round = round;
            var parameters = _parameters.Current; // one set of settings for the whole round (C2)
            _limiter.Rate = parameters.MaxBandwidthBytesPerSecond;
            ApplyDeltaCacheSize(parameters);
            long opsBefore = _vm.GuestOperations;
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
            await FirstRehearsalsAsync(ct).ConfigureAwait(false); // round 0: before its sync, which then sees their writes

            long syncStart = _time.GetTimestamp();
            _sync!.Run(vmRunning: true); // what did the guest dirty while we sent?
            long synced = _time.GetTimestamp();
            _cost.RecordSync(_time.GetElapsedTime(syncStart, synced).TotalMilliseconds);
            long logged = _vm.DirtyLog.PagesLogged;
            stats.RecordSync(logged, synced, _time);
            _slowdown.AfterRound((logged - loggedBefore) * PageGeometry.PageSize, bytes, stats.BytesPerSecond,
                parameters);
            loggedBefore = logged;
            var outcome = Outcome(round, previousRemaining, stats, parameters);
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
                outcome = Outcome(round, previousRemaining, stats, parameters);
                decision = _policy.Decide(outcome);
            }

            previousRemaining = outcome.RemainingPages;
            double roundSeconds = _time.GetElapsedTime(roundStart).TotalSeconds;
            RecordRound(_report.AddRound(round, dirtyAtStart, sent, bytes, seconds * 1000, stats.DirtyPagesPerSecond,
                final: false), parameters, (_vm.GuestOperations - opsBefore) / Math.Max(roundSeconds, 1e-6));
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
                case ConvergenceDecision.ContinueRounds { Pause: var pause } when pause > TimeSpan.Zero:
                    await Task.Delay(pause, _time, ct).ConfigureAwait(false);
                    break;
            }
        }
    }

    /// <summary>
    /// What precopy knows after a round's sync, with the switchover's fixed cost as last measured, the settings the
    /// round ran with and whether a convergence method can still slow the guest.
    /// </summary>
    private RoundOutcome Outcome(int round, long previousRemaining, RoundStats stats, MigrationParameters parameters) =>
        new(round, _bitmap.Remaining, previousRemaining, stats.CautiousDataPagesPerSecond, stats.DirtyPagesPerSecond,
            stats.BytesPerSecond, _time.GetElapsedTime(_start), _cost.FixedMs)
        {
            Parameters = parameters,
            CanSlowGuest = _slowdown.MaySlowEnough(parameters),
            ThrottleShare = _vm.Throttle.MaxCurrentShare,
        };

    /// <summary>The settings a round ran with, what the guest did meanwhile, and the prediction (rule C2).</summary>
    private void RecordRound(MigrationReport.RoundSection section, MigrationParameters parameters, double opsPerSecond)
    {
        section.DowntimeLimitMs = parameters.DowntimeLimitAt(section.Round).TotalMilliseconds;
        section.MaxBandwidthBytesPerSec = parameters.MaxBandwidthBytesPerSecond;
        section.Converge = JsonNamingPolicy.CamelCase.ConvertName(parameters.Converge.ToString());
        section.ThrottlePercent = Math.Round(_vm.Throttle.MaxCurrentShare * 100, 2);
        section.DirtyLimitBytesPerSec = _slowdown.CeilingBytesPerSecond;
        section.DeltaCacheBytes = _counters.DeltaCache?.CapacityBytes; // set when the target took deltas
        section.GuestOpsPerSec = Math.Round(opsPerSecond, 1);
        section.Prediction = _convergence.Prediction?.Text;
        var convergence = _report.Report.Convergence;
        convergence.Method = section.Converge;
        convergence.Steps = _slowdown.Steps;
        convergence.MaxThrottlePercent = Math.Max(convergence.MaxThrottlePercent, section.ThrottlePercent);
        convergence.ParameterChanges = _parameters.Changes;
        convergence.Prediction = section.Prediction;
        convergence.VcpuMsStolen = Math.Round((_vm.Throttle.Stolen - _stolenAtStart).TotalMilliseconds, 1);
        convergence.GuestOpsPerSecDuring = Math.Round(
            (_vm.GuestOperations - _opsAtStart) / Math.Max(_time.GetElapsedTime(_start).TotalSeconds, 1e-6), 1);
        if (section.Round == 0)
        {
            convergence.GuestOpsPerSecFirstRound = section.GuestOpsPerSec;
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
