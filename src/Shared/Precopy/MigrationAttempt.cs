using System.Text.Json;
using Microsoft.Extensions.Logging;
using Migration.Shared.Concurrency;
using Migration.Shared.Devices;
using Migration.Shared.Diagnostics;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Machine;
using Migration.Shared.Reporting;
using Migration.Shared.Transport;

namespace Migration.Shared.Precopy;

/// <summary>
/// One migration attempt, phase by phase: <see cref="SetupAsync"/> (MigrationAttempt.Setup.cs),
/// <see cref="RunRoundsAsync"/> (.Rounds.cs), <see cref="StopAndCopyAsync"/> (.StopAndCopy.cs),
/// <see cref="HandOverAsync"/> (.Handover.cs), and on any error <see cref="FailAsync"/> (.Failure.cs).
/// </summary>
/// <remarks>
/// Failure never costs the guest: the source guest is resumed (if paused) and keeps running, dirty logging is switched
/// off, and the next attempt starts again from a full bitmap, so nothing a failed attempt consumed can be missed.
/// </remarks>
internal sealed partial class MigrationAttempt : IAsyncDisposable
{
    /// <summary>How long a cancelled attempt still waits for Begin's reply, whose key its Cancel needs.</summary>
    private static readonly TimeSpan BeginGrace = TimeSpan.FromSeconds(2);

    /// <summary>Rehearsals counted before the first decision (after round 0); each later one adds one.</summary>
    private const int FirstCountedRehearsals = 2;

    private readonly VirtualMachine _vm;
    private readonly MigrationOptions _options;
    private readonly EngineSeams _seams;
    private readonly TimeProvider _time;
    private readonly IProgress<RoundProgress>? _progress;
    private readonly ILogger _log;
    private readonly string _id = Guid.NewGuid().ToString("n");
    private readonly long _start;
    private readonly MigrationReportBuilder _report;
    private readonly TransferCounters _counters;
    private readonly SourceMetrics _metrics;
    private readonly IMigrationTransport _transport;
    private readonly List<IPageSink> _channels = [];
    private readonly MigrationBitmap _bitmap;
    private readonly SchedulingPoints _points;
    private readonly ConvergencePolicy _convergence; // the engine's rule, whose prediction the report shows
    private readonly IConvergencePolicy _policy; // that rule as the seams wrap it
    private readonly List<IPrecopyParticipant> _participants;
    private readonly List<IPrecopyParticipant> _joined = [];
    private readonly CancellationTokenSource _streams = new(); // on failure the target hears why before streams reset
    private readonly StallWatchdog _stall;
    private readonly LiveParameters _parameters; // read once per round (C2)
    private readonly GuestSlowdown _slowdown; // auto-converge or the dirty limit; lifted when the attempt ends
    private readonly BandwidthLimiter _limiter;
    private readonly long _opsAtStart; // the guest's work and throttled time when the attempt began
    private readonly TimeSpan _stolenAtStart;
    private readonly string _configJson;
    private DirtySync? _sync;
    private RoundStats? _stats;
    private string _targetInstance = string.Empty;
    private long _downtimeStart;
    private readonly SwitchoverCost _cost = new(); // measured by rehearsals (RehearseSwitchoverAsync)
    private PhaseTimer? _downtime; // from the pause to the target's reply: every millisecond in a named phase
    private bool _rehearses; // the target takes rehearsal Completes
    private Task? _warmUp; // the first, uncounted rehearsal, beside round 0 (StartWarmUpRehearsal)
    private bool _resumeFirst; // the options' choice, when the target speaks it and the guest has no poison value
    private uint _maxMessageBytes; // the target's limit on a control message (BeginReply)
    private bool _paused;
    private int _round;

    public MigrationAttempt(VirtualMachine vm, MigrationOptions options, LiveParameters parameters, EngineSeams seams,
        TimeProvider time, IProgress<RoundProgress>? progress, ILogger log)
    {
        _vm = vm;
        _options = options;
        _parameters = parameters;
        _slowdown = new GuestSlowdown(vm.Throttle);
        _opsAtStart = vm.GuestOperations;
        _stolenAtStart = vm.Throttle.Stolen;
        _seams = seams;
        _time = time;
        _progress = progress;
        _log = log;
        _start = time.GetTimestamp();
        _report = new MigrationReportBuilder(_id, vm.Config, options);
        _metrics = seams.Metrics;
        _counters = new TransferCounters(_metrics);
        _points = vm.Scheduling;
        _bitmap = new MigrationBitmap(vm.DirtyLog, _points);
        _convergence = new ConvergencePolicy(options);
        _policy = seams.Convergence(_convergence);
        _participants = [.. vm.PrecopyParticipants.Select(seams.Participant)];
        _limiter = new BandwidthLimiter(parameters.Current.MaxBandwidthBytesPerSecond, time);
        _transport = seams.Transport?.Invoke(vm, _counters)
            ?? IMigrationTransport.Create(vm.Ram, options.Transport, _limiter, _counters);
        _stall = new StallWatchdog(_counters, time, options.StallTimeout);
        _configJson = JsonSerializer.Serialize(vm.Config, WireJson.Default.GuestConfig); // as sent: the state digest covers it
    }

    public MigrationPhase Phase { get; private set; } = MigrationPhase.Setup;

    /// <summary>
    /// Runs the phases in order. Up to the handover the attempt is bounded by the timeout and watched for stalls; any
    /// failure there ends in <see cref="FailAsync"/>, which resumes the guest (the target cannot resume it without the
    /// completion). From the handover on, only a definite answer from the target decides (<see cref="HandOverAsync"/>).
    /// </summary>
    public async Task<MigrationReport> RunAsync(CancellationToken ct)
    {
        using var timeout = new CancellationTokenSource(_options.Timeout, _time);
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token, _stall.Token);
        _stall.Start();
        _metrics.Active.Add(1);
        try
        {
            await SetupAsync(bounded.Token).ConfigureAwait(false);
            EnterPhase(MigrationPhase.Precopy);
            await RunRoundsAsync(bounded.Token).ConfigureAwait(false);
            EnterPhase(MigrationPhase.StopAndCopy);
            var completion = await StopAndCopyAsync(bounded.Token).ConfigureAwait(false);
            EnterPhase(MigrationPhase.Handover);
            await HandOverAsync(completion).ConfigureAwait(false);
            EnterPhase(MigrationPhase.Completed);
        }
        catch (HandoverUnknownException unknown)
        {
            await EndUnknownAsync(unknown.Message).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsMigrationFailure(ex))
        {
            await bounded.CancelAsync().ConfigureAwait(false);
            await SettleWarmUpAsync().ConfigureAwait(false);
            var failure = Explain(ex, ct.IsCancellationRequested, timeout.IsCancellationRequested);
            await FailAsync(failure).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // the engine's boundary: a bug still ends the attempt cleanly, reported as one
        catch (Exception bug)
#pragma warning restore CA1031
        {
            await bounded.CancelAsync().ConfigureAwait(false);
            await SettleWarmUpAsync().ConfigureAwait(false);
            await EndOnBugAsync(bug).ConfigureAwait(false);
        }
        finally
        {
            _slowdown.Lift(); // a guest that runs on here runs at full speed again
            _stall.Disarm();
            _metrics.Active.Add(-1);
        }

        await CloseChannelsAsync().ConfigureAwait(false); // every byte counted before the totals are read
        var report = _report.Finish(_counters, _time.GetElapsedTime(_start).TotalMilliseconds, _joined);
        _metrics.Ended(report.Status, report.Timing.TotalMs, report.Timing.DowntimeMs);
        return report;
    }

    public async ValueTask DisposeAsync()
    {
        await CloseChannelsAsync().ConfigureAwait(false);
        await _transport.DisposeAsync().ConfigureAwait(false);
        _streams.Dispose();
        _stall.Dispose();
    }

    private async Task CloseChannelsAsync()
    {
        foreach (var channel in _channels)
        {
            await channel.DisposeAsync().ConfigureAwait(false);
        }

        _channels.Clear();
    }

    /// <summary>Where the attempt is, for error texts: "precopy round 3", "stop-and-copy".</summary>
    private string Where => Phase switch
    {
        MigrationPhase.Precopy => $"precopy round {_round}",
        MigrationPhase.StopAndCopy => "stop-and-copy",
        MigrationPhase.Handover => "the handover",
        _ => Phase.ToString().ToLowerInvariant(),
    };

    /// <summary>A failure with a kind, and a message that says what was lost and when.</summary>
    private MigrationFailedException Explain(Exception ex, bool cancelledByUser, bool timedOut)
    {
        if (cancelledByUser)
        {
            return FailureOf(ex, cancelledByUser: true);
        }

        if (timedOut)
        {
            return new MigrationFailedException(FailureKind.Timeout,
                $"the migration took longer than its {_options.Timeout.TotalSeconds:F0} s limit (in {Where})", ex);
        }

        if (_stall.Reason is string stalled)
        {
            return new MigrationFailedException(FailureKind.ConnectionLost, $"{stalled} (in {Where})", ex);
        }

        var failure = FailureOf(ex, cancelledByUser: false);
        return failure.Kind switch
        {
            FailureKind.ConnectionLost => new MigrationFailedException(FailureKind.ConnectionLost,
                $"lost the connection to the target during {Where}: {failure.Message}", ex),
            FailureKind.Timeout => new MigrationFailedException(FailureKind.Timeout,
                $"the target did not answer in time during {Where} ({failure.Message.TrimEnd(' ', ':')})", ex),
            _ => failure,
        };
    }

    private void EnterPhase(MigrationPhase next)
    {
        PrecopyLog.PhaseChanged(_log, _id, Phase, next);
        Phase = next;
    }

    private void Report(int round, double expectedMs) =>
        _progress?.Report(new RoundProgress(Phase, round, _bitmap.Remaining, _counters.PagesSent,
            (_stats?.BytesPerSecond ?? 0) / 1e6, expectedMs, _vm.Throttle.MaxCurrentShare * 100,
            Phase == MigrationPhase.Precopy ? _convergence.Prediction?.Text : null));
}
