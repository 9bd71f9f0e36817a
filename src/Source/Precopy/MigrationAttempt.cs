using Microsoft.Extensions.Logging;
using Migration.Shared.Concurrency;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Precopy;
using Migration.Shared.Reporting;
using Migration.Source.Transport;

namespace Migration.Source.Precopy;

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
    private readonly VirtualMachine _vm;
    private readonly MigrationOptions _options;
    private readonly EngineSeams _seams;
    private readonly TimeProvider _time;
    private readonly IProgress<RoundProgress>? _progress;
    private readonly ILogger _log;
    private readonly string _id = Guid.NewGuid().ToString("n");
    private readonly long _start;
    private readonly MigrationReportBuilder _report;
    private readonly TransferCounters _counters = new();
    private readonly IMigrationTransport _transport;
    private readonly List<IPageSink> _channels = [];
    private readonly MigrationBitmap _bitmap;
    private readonly SchedulingPoints _points;
    private readonly IConvergencePolicy _policy;
    private readonly List<IPrecopyParticipant> _participants;
    private readonly List<IPrecopyParticipant> _joined = [];
    private readonly CancellationTokenSource _streams = new(); // on failure the target hears why before streams reset
    private DirtySync? _sync;
    private RoundStats? _stats;
    private long _downtimeStart;
    private bool _paused;

    public MigrationAttempt(VirtualMachine vm, MigrationOptions options, EngineSeams seams, TimeProvider time,
        IProgress<RoundProgress>? progress, ILogger log)
    {
        _vm = vm;
        _options = options;
        _seams = seams;
        _time = time;
        _progress = progress;
        _log = log;
        _start = time.GetTimestamp();
        _report = new MigrationReportBuilder(_id, vm.Config, options);
        _points = vm.Scheduling;
        _bitmap = new MigrationBitmap(vm.DirtyLog, _points);
        _policy = seams.Convergence(new ConvergencePolicy(options));
        _participants = [.. vm.PrecopyParticipants.Select(seams.Participant)];
        var limiter = new BandwidthLimiter(options.MaxBandwidthBytesPerSecond, time);
        _transport = seams.Transport?.Invoke(vm, _counters)
            ?? new GrpcMigrationTransport(options.Target, vm.Ram, options.Compression, options.PagesPerBatch, limiter,
                _counters);
    }

    public MigrationPhase Phase { get; private set; } = MigrationPhase.Setup;

    /// <summary>
    /// Runs the phases in order; any failure ends in <see cref="FailAsync"/>. Returns the attempt's report.
    /// </summary>
    public async Task<MigrationReport> RunAsync(CancellationToken ct)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct);
        try
        {
            await SetupAsync(linked.Token).ConfigureAwait(false);
            EnterPhase(MigrationPhase.Precopy);
            await RunRoundsAsync(linked.Token).ConfigureAwait(false);
            EnterPhase(MigrationPhase.StopAndCopy);
            var completion = await StopAndCopyAsync(linked.Token).ConfigureAwait(false);
            EnterPhase(MigrationPhase.Handover);
            await HandOverAsync(completion, ct).ConfigureAwait(false);
            EnterPhase(MigrationPhase.Completed);
        }
        catch (Exception ex) when (MigrationFailedException.IsMigrationFailure(ex))
        {
            await linked.CancelAsync().ConfigureAwait(false);
            await FailAsync(MigrationFailedException.From(ex, ct.IsCancellationRequested)).ConfigureAwait(false);
        }

        await CloseChannelsAsync().ConfigureAwait(false); // every byte counted before the totals are read
        return _report.Finish(_counters, _time.GetElapsedTime(_start).TotalMilliseconds, _joined);
    }

    public async ValueTask DisposeAsync()
    {
        await CloseChannelsAsync().ConfigureAwait(false);
        await _transport.DisposeAsync().ConfigureAwait(false);
        _streams.Dispose();
    }

    private async Task CloseChannelsAsync()
    {
        foreach (var channel in _channels)
        {
            await channel.DisposeAsync().ConfigureAwait(false);
        }

        _channels.Clear();
    }

    private void EnterPhase(MigrationPhase next)
    {
        PrecopyLog.PhaseChanged(_log, _id, Phase, next);
        Phase = next;
    }

    private void Report(int round, double expectedMs) =>
        _progress?.Report(new RoundProgress(Phase, round, _bitmap.Remaining, _counters.PagesSent,
            (_stats?.BytesPerSecond ?? 0) / 1e6, expectedMs));
}
