using System.Diagnostics;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Migration.Management;
using Migration.Shared.Guest;
using Migration.Shared.Reporting;
using Migration.Source.Precopy;

namespace Migration.Source.Management;

/// <summary>
/// The source's side of the management API (<c>run</c>): one running guest, and at most one migration of it at a
/// time. A completed migration ends the guest here (it runs on the target); a failed or cancelled one leaves it
/// running, ready for the next attempt.
/// </summary>
internal sealed class SourceHost : IManagementHost, IDisposable
{
    private readonly object _gate = new();
    private readonly MigrationOptions _defaults;
    private readonly ILoggerFactory _logging;
    private readonly TextWriter _output;
    private VirtualMachine? _vm;
    private string _why = "no guest booted";
    private Running? _current;
    private MigrationInfo _last = new() { Status = "none" };

    public SourceHost(VirtualMachine vm, MigrationOptions defaults, ILoggerFactory logging, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(vm);
        _vm = vm;
        _defaults = defaults;
        _logging = logging;
        _output = output;
        Events.Attach(vm);
    }

    public string Role => "source";

    public VmEventHub Events { get; } = new();

    /// <summary>The migration in flight, for a caller that must wait for it (shutdown).</summary>
    public Task? Migration
    {
        get
        {
            lock (_gate)
            {
                return _current?.Task;
            }
        }
    }

    public T WithVm<T>(Func<VirtualMachine?, string, T> use)
    {
        ArgumentNullException.ThrowIfNull(use);
        lock (_gate)
        {
            return use(_vm, _why);
        }
    }

    public MigrationInfo StartMigration(StartMigrationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        lock (_gate)
        {
            if (_vm is not { } vm)
            {
                throw Precondition($"no guest runs here: {_why}");
            }

            if (_current is not null)
            {
                throw Precondition($"a migration to {_current.Target} is already running; cancel it or wait");
            }

            var options = OptionsOf(request, vm.Config);
            var progress = new LatestProgress();
            var cts = new CancellationTokenSource();
            var engine = new PrecopyEngine(vm, options, progress, logger: _logging.CreateLogger("precopy"));
            var running = new Running(options.Target, progress, cts, Stopwatch.StartNew());
            _current = running;
            _output.WriteLine($"source: migrating to {options.Target} (management API)");
            Events.PublishMigration(string.Empty, "active", null);
            running.Task = Task.Run(() => RunAsync(vm, engine, running), CancellationToken.None);
            return running.Info();
        }
    }

    public MigrationInfo QueryMigration()
    {
        lock (_gate)
        {
            return _current?.Info() ?? _last;
        }
    }

    public MigrationInfo CancelMigration()
    {
        lock (_gate)
        {
            if (_current is not { } running)
            {
                throw Precondition("no migration is running");
            }

            running.Cancel.Cancel();
            return running.Info();
        }
    }

    public void Dispose()
    {
        Events.Dispose();
        lock (_gate)
        {
            _current?.Cancel.Cancel();
        }
    }

    private async Task RunAsync(VirtualMachine vm, PrecopyEngine engine, Running running)
    {
        MigrationReport report;
        try
        {
            report = await engine.MigrateAsync(running.Cancel.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            report = new MigrationReport { Status = MigrationStatus.Failed, Error = ex.Message };
        }

        lock (_gate)
        {
            if (report.Status is MigrationStatus.Completed or MigrationStatus.Unknown)
            {
                vm.Shutdown(); // completed: the guest runs on the target; unknown: it may, so never here again
                _vm = null;
                _why = report.Status == MigrationStatus.Completed
                    ? $"the guest migrated to {running.Target}"
                    : $"the handover to {running.Target} has an unknown outcome; the guest never runs here again";
            }

            _last = running.Info(report);
            _current = null;
            running.Cancel.Dispose();
        }

        string status = report.Status.ToString().ToLowerInvariant();
        _output.WriteLine($"source: migration to {running.Target} {status}" +
            (report.Error is null ? string.Empty : $": {report.Error}"));
        Events.PublishMigration(report.MigrationId ?? string.Empty, status, report.Error);
    }

    private MigrationOptions OptionsOf(StartMigrationRequest r, GuestConfig guest)
    {
        if (!Uri.TryCreate(r.Target, UriKind.Absolute, out var target)
            || target.Scheme is not ("http" or "https"))
        {
            throw Invalid($"target '{r.Target}' is not an http:// or https:// URL");
        }

        if (r.HasDowntimeMs && !(double.IsFinite(r.DowntimeMs) && r.DowntimeMs is > 0 and < 1e9))
        {
            throw Invalid($"downtime_ms {r.DowntimeMs} is not a positive number of milliseconds below 1e9");
        }

        var options = _defaults with { Target = target };
        options = r.HasHints ? options with { Hints = r.Hints } : options;
        options = r.HasSkipBallooned ? options with { SkipBallooned = r.SkipBallooned } : options;
        options = r.HasDowntimeMs ? options with { DowntimeLimit = TimeSpan.FromMilliseconds(r.DowntimeMs) } : options;
        options = r.HasChannels ? options with { Channels = (int)Math.Min(r.Channels, int.MaxValue) } : options;
        options = r.HasMaxRounds ? options with { MaxRounds = (int)Math.Min(r.MaxRounds, int.MaxValue) } : options;
        options = r.HasMaxBandwidthBytesPerSecond
            ? options with { MaxBandwidthBytesPerSecond = r.MaxBandwidthBytesPerSecond }
            : options;
        if (r.HasCompression)
        {
            if (!Enum.TryParse<Compression>(r.Compression, ignoreCase: true, out var compression)
                || !Enum.IsDefined(compression))
            {
                throw Invalid($"compression '{r.Compression}' is not one of " +
                    string.Join(", ", Enum.GetNames<Compression>().Select(n => n.ToLowerInvariant())));
            }

            options = options with { Compression = compression };
        }

        try
        {
            options.Validate();
            options.ValidateFor(guest);
        }
        catch (Exception ex) when (ex is ArgumentException or OverflowException)
        {
            throw Invalid(ex.Message);
        }

        return options;
    }

    private static RpcException Invalid(string detail) => new(new Status(StatusCode.InvalidArgument, detail));

    private static RpcException Precondition(string detail) => new(new Status(StatusCode.FailedPrecondition, detail));

    /// <summary>The newest progress snapshot, kept for <c>query-migrate</c>.</summary>
    private sealed class LatestProgress : IProgress<RoundProgress>
    {
        private readonly object _gate = new();
        private RoundProgress? _latest;

        public RoundProgress? Latest
        {
            get
            {
                lock (_gate)
                {
                    return _latest;
                }
            }
        }

        public void Report(RoundProgress value)
        {
            lock (_gate)
            {
                _latest = value;
            }
        }
    }

    private sealed class Running(Uri target, LatestProgress progress, CancellationTokenSource cancel, Stopwatch clock)
    {
        public Uri Target => target;

        public CancellationTokenSource Cancel => cancel;

        public Task? Task { get; set; }

        public MigrationInfo Info(MigrationReport? report = null)
        {
            var p = progress.Latest;
            var info = new MigrationInfo
            {
                Status = report is null ? "active" : report.Status.ToString().ToLowerInvariant(),
                Target = target.ToString(),
                ElapsedMs = clock.Elapsed.TotalMilliseconds,
                Rounds = (uint)(report?.Rounds.Count ?? (p?.Round ?? 0)),
                PagesSent = (ulong)Math.Max(0, p?.PagesSent ?? 0),
            };
            if (report is not null)
            {
                info.MigrationId = report.MigrationId ?? string.Empty;
                info.Error = report.Error ?? string.Empty;
                info.BytesOnWire = (ulong)Math.Max(0, report.Transfer.BytesOnWire);
                info.ReportJson = report.ToJson();
            }

            return info;
        }
    }
}
