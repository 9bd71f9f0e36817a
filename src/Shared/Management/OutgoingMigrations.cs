using System.Diagnostics;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Migration.Shared.Cli;
using Migration.Shared.Hosting;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Shared.Transport;

namespace Migration.Management;

/// <summary>
/// The management API's migration controls over a running guest: at most one outgoing migration at a time, its
/// progress for a query, its cancellation, the last outcome. The source's <c>run</c> and a target serving the guest
/// it received both use it; what becomes of the guest when a migration ends is the host's call. Migrations belong to
/// the guest they move (<see cref="GuestIds"/>): a query names a guest and sees only its migrations, and a guest that
/// a migration took away is recorded as gone, its event watchers ended, before the host lets it go.
/// </summary>
internal sealed class OutgoingMigrations : IDisposable
{
    private readonly object _gate = new();
    private readonly MigrationOptions _defaults;
    private readonly ILoggerFactory _logging;
    private readonly TextWriter _output;
    private readonly VmEventHub _events;
    private readonly string _role;
    private readonly GuestIds _guests;
    private readonly Dictionary<string, MigrationInfo> _lastOf = new(StringComparer.Ordinal);
    private readonly Queue<string> _lastOrder = new();
    private Running? _current;

    /// <param name="defaults">Options a request does not set (the process's flags: security, timeouts).</param>
    /// <param name="role">How the process names itself in the lines it prints ("source", "target").</param>
    public OutgoingMigrations(MigrationOptions defaults, ILoggerFactory logging, TextWriter output, VmEventHub events,
        string role, GuestIds guests)
    {
        _guests = guests;
        _defaults = defaults;
        _logging = logging;
        _output = output;
        _events = events;
        _role = role;
    }

    /// <summary>The migration in flight, for a caller that must wait for it (shutdown).</summary>
    public Task? Current
    {
        get
        {
            lock (_gate)
            {
                return _current?.Task;
            }
        }
    }

    /// <summary>
    /// Starts migrating <paramref name="vm"/> as <paramref name="request"/> asks; throws an
    /// <see cref="RpcException"/> for a bad request or while a migration runs. <paramref name="ended"/> runs once with
    /// the target and the report, before the next migration may start, so the host can let the guest go first.
    /// </summary>
    public MigrationInfo Start(VirtualMachine vm, StartMigrationRequest request, Action<Uri, MigrationReport> ended)
    {
        ArgumentNullException.ThrowIfNull(vm);
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(ended);
        lock (_gate)
        {
            if (_current is not null)
            {
                throw Precondition($"a migration to {_current.Target} is already running; cancel it or wait");
            }

            var options = OptionsOf(request, vm.Config);
            var progress = new LatestProgress();
            var engine = new PrecopyEngine(vm, options, progress, logger: _logging.CreateLogger("precopy"));
            var running = new Running(options.Target, _guests.IdOf(vm), progress, new CancellationTokenSource(),
                Stopwatch.StartNew(), engine.Parameters);
            _current = running;
            _output.WriteLine($"{_role}: migrating to {options.Target} (management API)");
            _events.PublishMigration(running.GuestId, string.Empty, "active", null);
            running.Task = Task.Run(() => RunAsync(vm, engine, running, ended), CancellationToken.None);
            return running.Info();
        }
    }

    /// <summary>
    /// The running or last migration of the guest <paramref name="requested"/> names (empty: <paramref name="vm"/>,
    /// the guest running now, or "none" when there is none). A guest a migration took away is answered with that
    /// migration; another guest that left, or one that never ran here, is refused.
    /// </summary>
    public MigrationInfo Query(VirtualMachine? vm, string why, string requested)
    {
        lock (_gate)
        {
            if (!string.IsNullOrEmpty(requested) && (_lastOf.TryGetValue(requested, out var last)
                || _current?.GuestId == requested))
            {
                return _current?.GuestId == requested ? _current.Info() : last!;
            }

            if (vm is null && string.IsNullOrEmpty(requested))
            {
                return new MigrationInfo { Status = "none" };
            }

            string guest = _guests.Bind(vm, why, requested);
            return _current?.GuestId == guest ? _current.Info()
                : _lastOf.TryGetValue(guest, out var mine) ? mine
                : new MigrationInfo { Status = "none", GuestId = guest };
        }
    }

    /// <summary>
    /// Cancels the running migration of the guest <paramref name="requested"/> names (empty: the one running now).
    /// </summary>
    public MigrationInfo Cancel(VirtualMachine? vm, string why, string requested)
    {
        lock (_gate)
        {
            var running = RunningFor(vm, why, requested);
            running.Cancel.Cancel();
            return running.Info();
        }
    }

    /// <summary>
    /// The running migration of the guest <paramref name="requested"/> names (empty: the one running now); called under
    /// the lock. No migration of that guest running is FAILED_PRECONDITION.
    /// </summary>
    private Running RunningFor(VirtualMachine? vm, string why, string requested)
    {
        string guest = _current is { } active && active.GuestId == requested
            ? requested
            : _guests.Bind(vm, why, requested);
        return _current is { } running && running.GuestId == guest
            ? running
            : throw Precondition("no migration is running");
    }

    /// <summary>
    /// Changes the settings of the running migration of the guest the request names (empty: the one running now),
    /// from its next round.
    /// </summary>
    public MigrationInfo SetParameters(VirtualMachine? vm, string why, SetMigrationParametersRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        lock (_gate)
        {
            var running = RunningFor(vm, why, request.GuestId);
            try
            {
                running.Parameters.Change(p => Changed(p, request), OptionNames.Fields);
            }
            catch (ArgumentException ex)
            {
                throw Invalid(ex.Message);
            }
            catch (InvalidOperationException ex)
            {
                throw Precondition(ex.Message);
            }

            _output.WriteLine($"{_role}: migration settings changed; from the next round: " +
                ParametersJson(running.Parameters.Current));
            return running.Info();
        }
    }

    /// <summary>Why <paramref name="ms"/> is no downtime_ms a request may ask for, or null.</summary>
    private static string? DowntimeProblem(double ms) => double.IsFinite(ms) && ms is > 0 and < 1e9
        ? null
        : $"downtime_ms {ms} is not a positive number of milliseconds below 1e9";

    /// <summary>
    /// <paramref name="p"/> with the request's set fields; <see cref="ArgumentException"/> for a bad value,
    /// <see cref="InvalidOperationException"/> for a setting this migration cannot take.
    /// </summary>
    internal static MigrationParameters Changed(MigrationParameters p, SetMigrationParametersRequest r)
    {
        if (r.HasDowntimeMs && DowntimeProblem(r.DowntimeMs) is { } problem)
        {
            throw new ArgumentException(problem);
        }

        p = r.HasDowntimeMs ? p with { DowntimeLimit = TimeSpan.FromMilliseconds(r.DowntimeMs) } : p;
        p = r.HasMaxBandwidthBytesPerSecond
            ? p with
            {
                MaxBandwidthBytesPerSecond = r.MaxBandwidthBytesPerSecond == 0 ? null : r.MaxBandwidthBytesPerSecond,
            }
            : p;
        p = r.HasMaxRounds ? p with { MaxRounds = (int)Math.Min(r.MaxRounds, int.MaxValue) } : p;
        if (r.HasDeltaCacheBytes)
        {
            p = p.DeltaCacheBytes is null
                ? throw new InvalidOperationException("delta pages are off for this migration: the target is asked " +
                    "for them when it starts (start it with delta_cache_bytes, or migrate --delta-cache-mib)")
                : p with { DeltaCacheBytes = (long)Math.Min(r.DeltaCacheBytes, long.MaxValue) };
        }

        return r.Convergence is { } c ? WithConvergence(p, c) : p;
    }

    /// <summary><paramref name="p"/> with the convergence settings' set fields.</summary>
    private static MigrationParameters WithConvergence(MigrationParameters p, ConvergenceSettings c)
    {
        if (c.HasConverge)
        {
            if (!CliOptions.TryParseName<ConvergeMethod>(c.Converge, out var method))
            {
                throw new ArgumentException($"converge '{c.Converge}' is not one of " +
                    string.Join(", ", Enum.GetNames<ConvergeMethod>().Select(n => n.ToLowerInvariant())));
            }

            p = p with { Converge = method };
        }

        var t = p.Throttle;
        t = c.HasThrottleInitialPercent ? t with { Initial = c.ThrottleInitialPercent / 100 } : t;
        t = c.HasThrottleIncrementPercent ? t with { Increment = c.ThrottleIncrementPercent / 100 } : t;
        t = c.HasThrottleMaxPercent ? t with { Max = c.ThrottleMaxPercent / 100 } : t;
        t = c.HasThrottleTailslow ? t with { TailSlow = c.ThrottleTailslow } : t;
        p = p with { Throttle = t };
        p = c.HasDirtyLimitBytesPerSecond
            ? p with { DirtyLimitBytesPerSecond = c.DirtyLimitBytesPerSecond == 0 ? null : c.DirtyLimitBytesPerSecond }
            : p;
        return c.HasDowntimeRamp
            ? p with { DowntimeRamp = c.DowntimeRamp.Length == 0 ? null : DowntimeRamp.Parse(c.DowntimeRamp) }
            : p;
    }

    private static string ParametersJson(MigrationParameters p) => System.Text.Json.JsonSerializer.Serialize(new
    {
        downtimeMs = p.DowntimeLimit.TotalMilliseconds,
        downtimeRamp = p.DowntimeRamp?.ToString(),
        maxBandwidthBytesPerSecond = p.MaxBandwidthBytesPerSecond,
        maxRounds = p.MaxRounds,
        converge = p.Converge.ToString().ToLowerInvariant(),
        throttle = p.Throttle.ToString(),
        dirtyLimitBytesPerSecond = p.DirtyLimitBytesPerSecond,
        deltaCacheBytes = p.DeltaCacheBytes,
    });

    public void Dispose()
    {
        lock (_gate)
        {
            _current?.Cancel.Cancel();
        }
    }

    internal static RpcException Invalid(string detail) => RpcErrors.InvalidArgument(detail);

    internal static RpcException Precondition(string detail) => RpcErrors.FailedPrecondition(detail);

    private async Task RunAsync(VirtualMachine vm, PrecopyEngine engine, Running running,
        Action<Uri, MigrationReport> ended)
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

        // Completed, or unknown (the next target may run it): the guest never runs here again. Recorded before the
        // host lets it go, so a call naming it is told where it went.
        string? left = report.Status switch
        {
            MigrationStatus.Completed => $"it migrated to {running.Target}",
            MigrationStatus.Unknown => $"its handover to {running.Target} has an unknown outcome; it never runs here " +
                "again",
            _ => null,
        };
        if (left is not null)
        {
            _guests.Left(vm, left);
        }

        try
        {
            ended(running.Target, report);
        }
        finally
        {
            lock (_gate)
            {
                Remember(running.GuestId, running.Info(report));
                _current = null;
                running.Cancel.Dispose();
            }
        }

        string status = report.Status.ToString().ToLowerInvariant();
        _output.WriteLine($"{_role}: migration to {running.Target} {status}" +
            (report.Error is null ? string.Empty : $": {report.Error}"));
        _events.PublishMigration(running.GuestId, report.MigrationId ?? string.Empty, status, report.Error);
        if (left is not null)
        {
            _events.End(running.GuestId, Precondition(_guests.Gone(running.GuestId, left)));
        }
    }

    /// <summary>The last migration of a guest; called under the lock. The last 64 guests' are kept.</summary>
    private void Remember(string guestId, MigrationInfo info)
    {
        if (!_lastOf.ContainsKey(guestId))
        {
            _lastOrder.Enqueue(guestId);
        }

        _lastOf[guestId] = info;
        while (_lastOrder.Count > 64)
        {
            _lastOf.Remove(_lastOrder.Dequeue());
        }
    }

    private MigrationOptions OptionsOf(StartMigrationRequest r, GuestConfig guest)
    {
        if (!Uri.TryCreate(r.Target, UriKind.Absolute, out var target)
            || target.Scheme is not ("http" or "https"))
        {
            throw Invalid($"target '{r.Target}' is not an http:// or https:// URL");
        }

        // The caller names the target, the operator says where this process's credentials may go: refused here,
        // before anything connects.
        if (_defaults.Security.RequestedTargetProblem(target, OptionNames.Fields.Target) is { } forbidden)
        {
            throw RpcErrors.PermissionDenied(forbidden);
        }

        if (r.HasDowntimeMs && DowntimeProblem(r.DowntimeMs) is { } downtime)
        {
            throw Invalid(downtime);
        }

        var options = _defaults with { Target = target };
        options = r.HasHints ? options with { Hints = r.Hints } : options;
        options = r.HasSkipBallooned ? options with { SkipBallooned = r.SkipBallooned } : options;
        options = r.HasSkipDiscarded ? options with { SkipDiscarded = r.SkipDiscarded } : options;
        options = r.HasDowntimeMs ? options with { DowntimeLimit = TimeSpan.FromMilliseconds(r.DowntimeMs) } : options;
        options = r.HasChannels ? options with { Channels = (int)Math.Min(r.Channels, int.MaxValue) } : options;
        options = r.HasMaxRounds ? options with { MaxRounds = (int)Math.Min(r.MaxRounds, int.MaxValue) } : options;
        options = r.HasMaxBandwidthBytesPerSecond
            ? options with { MaxBandwidthBytesPerSecond = r.MaxBandwidthBytesPerSecond }
            : options;
        options = r.HasDeltaCacheBytes
            ? options with { DeltaCacheBytes = (long)Math.Min(r.DeltaCacheBytes, long.MaxValue) }
            : options;
        if (r.HasCompression)
        {
            if (!CliOptions.TryParseName<Compression>(r.Compression, out var compression))
            {
                throw Invalid($"compression '{r.Compression}' is not one of " +
                    string.Join(", ", Enum.GetNames<Compression>().Select(n => n.ToLowerInvariant())));
            }

            options = options with { Compression = compression };
        }

        try
        {
            if (r.Convergence is { } convergence)
            {
                var p = WithConvergence(options.Parameters, convergence);
                options = options with
                {
                    Converge = p.Converge,
                    Throttle = p.Throttle,
                    DirtyLimitBytesPerSecond = p.DirtyLimitBytesPerSecond,
                    DowntimeRamp = p.DowntimeRamp,
                };
            }

            options.Validate(OptionNames.Fields);
            options.ValidateFor(guest, OptionNames.Fields);
        }
        catch (Exception ex) when (ex is ArgumentException or OverflowException)
        {
            throw Invalid(ex.Message);
        }

        return options;
    }

    /// <summary>The newest progress snapshot, kept for a query.</summary>
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

    private sealed class Running(Uri target, string guestId, LatestProgress progress, CancellationTokenSource cancel,
        Stopwatch clock, LiveParameters parameters)
    {
        public LiveParameters Parameters => parameters;

        public Uri Target => target;

        public string GuestId => guestId;

        public CancellationTokenSource Cancel => cancel;

        public Task? Task { get; set; }

        public MigrationInfo Info(MigrationReport? report = null)
        {
            var p = progress.Latest;
            var info = new MigrationInfo
            {
                Status = report is null ? "active" : report.Status.ToString().ToLowerInvariant(),
                Target = target.ToString(),
                GuestId = guestId,
                ElapsedMs = clock.Elapsed.TotalMilliseconds,
                Rounds = (uint)(report?.Rounds.Count ?? (p is { } done ? done.Round + 1 : 0)), // rounds ended
                PagesSent = (ulong)Math.Max(0, p?.PagesSent ?? 0),
            };
            if (report is null)
            {
                info.Prediction = p?.Prediction ?? string.Empty;
                info.ThrottlePercent = p?.ThrottlePercent ?? 0;
                info.RemainingPages = (ulong)Math.Max(0, p?.RemainingPages ?? 0);
                info.ExpectedDowntimeMs = p?.ExpectedDowntimeMs ?? 0;
                info.ParametersJson = ParametersJson(parameters.Current);
            }

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
