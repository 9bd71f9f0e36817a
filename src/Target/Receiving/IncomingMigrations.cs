using System.Diagnostics;
using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Shared.Protocol;

namespace Migration.Target.Receiving;

/// <summary>
/// The target's one-migration-at-a-time state machine (<see cref="TargetState"/>): idle -> receiving -> verifying ->
/// resumed, or -> failed from receiving or verifying, and failed back to receiving at the next Begin. Every change
/// goes through one check-and-set under one lock, so no call sees a half-made transition: a Cancel that arrives
/// while a Complete verifies finds "verifying" and is refused, and a switchover that fails in any way ends in
/// "failed", never stuck in "verifying".
/// </summary>
/// <remarks>
/// Only a migration whose digests match and whose guest passes its self-check is resumed (<see cref="ISwitchover"/>);
/// anything else is discarded and the target takes the next migration.
/// </remarks>
internal sealed class IncomingMigrations : IDisposable
{
    private readonly object _lock = new();
    private readonly TargetOptions _options;
    private readonly ISwitchover _switchover;
    private readonly TargetReportWriter _reports;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly ILogger<IncomingMigrations> _log;
    private TargetState _state = TargetState.Idle;
    private IncomingMigration? _current;
    private GuestRam? _preallocated;
    private VirtualMachine? _resumed;
    private string? _lastId;
    private string? _lastError;

    public IncomingMigrations(TargetOptions options, ISwitchover switchover, TargetReportWriter reports,
        IHostApplicationLifetime lifetime, ILogger<IncomingMigrations> log)
    {
        _options = options;
        _switchover = switchover;
        _reports = reports;
        _lifetime = lifetime;
        _log = log;
        if (options.PreallocBytes is long bytes)
        {
            _preallocated = GuestRam.Allocate(bytes);
            double ms = _preallocated.Populate();
            TargetLog.Preallocated(_log, bytes >> 20, (long)ms);
        }
    }

    public TargetState State
    {
        get
        {
            lock (_lock)
            {
                return _state;
            }
        }
    }

    /// <summary>Idle or failed -> receiving: allocates the guest's RAM and answers with the target's limits.</summary>
    public BeginReply Begin(BeginRequest request)
    {
        var config = BeginRequestReader.Read(request);
        lock (_lock)
        {
            if (_state.IsBusy())
            {
                throw RpcErrors.FailedPrecondition(
                    $"target is busy with migration {_current?.Id ?? _lastId} ({_state.ToWire()})");
            }

            if (_resumed is not null)
            {
                throw RpcErrors.FailedPrecondition($"target already runs the guest of migration {_lastId}");
            }

            GuestRam? ram = null;
            if (_preallocated is not null && _preallocated.SizeBytes == config.RamBytes)
            {
                (ram, _preallocated) = (_preallocated, null);
            }

            try
            {
                _current = new IncomingMigration(request.MigrationId, config,
                    ram ?? GuestRam.Allocate(config.RamBytes));
            }
            catch (OutOfMemoryException ex)
            {
                throw RpcErrors.ResourceExhausted($"cannot host {config.RamBytes} bytes of guest RAM: {ex.Message}");
            }

            Move(request.MigrationId, TargetState.Receiving);
            _lastId = request.MigrationId;
            _lastError = null;
        }

        TargetLog.Receiving(_log, request.MigrationId, config.RamBytes >> 20, config.Vcpus);
        return new BeginReply
        {
            MaxMessageBytes = (uint)_options.MaxMessageBytes,
            Features = { WireNames.Lz4Feature, WireNames.RoundTagsFeature },
        };
    }

    /// <summary>The migration a page stream names, while it is receiving; else a FailedPrecondition status.</summary>
    public IncomingMigration RequireReceiving(string? migrationId)
    {
        lock (_lock)
        {
            return CurrentLocked(migrationId, TargetState.Receiving);
        }
    }

    /// <summary>
    /// Receiving -> failed: a bad batch or a broken stream discards the partial guest. False if not receiving.
    /// </summary>
    public bool Fail(IncomingMigration migration, string reason)
    {
        ArgumentNullException.ThrowIfNull(migration);
        lock (_lock)
        {
            if (!ReferenceEquals(_current, migration) || _state != TargetState.Receiving)
            {
                return false;
            }

            Move(migration.Id, TargetState.Failed);
            _current = null;
            _lastError = reason;
        }

        migration.Dispose();
        TargetLog.Failed(_log, migration.Id, reason);
        _reports.Queue(() => TargetReport.Of(migration.Id, TargetOutcome.Failed, null, reason, migration.CpuAtStart));
        StopIfOnce();
        return true;
    }

    /// <summary>
    /// Receiving -> verifying -> resumed or failed. The first step is atomic with the checks, so nothing can cancel or
    /// discard the migration while it verifies; whatever the switchover does, the state leaves "verifying".
    /// </summary>
    public CompleteReply Complete(CompleteRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        long entered = Stopwatch.GetTimestamp();
        IncomingMigration migration;
        lock (_lock)
        {
            migration = CurrentLocked(request.MigrationId, TargetState.Receiving);
            Move(migration.Id, TargetState.Verifying);
        }

        CompleteReply reply;
        VirtualMachine? vm;
        try
        {
            (reply, vm) = _switchover.Run(migration, request);
        }
        // The one boundary where any failure must end in "failed": a stuck "verifying" refuses every later Begin.
#pragma warning disable CA1031
        catch (Exception ex)
#pragma warning restore CA1031
        {
            TargetLog.SwitchoverCrashed(_log, migration.Id, ex);
            migration.Dispose();
            (reply, vm) = (new CompleteReply { Error = $"switchover failed: {ex.Message}" }, null);
        }

        lock (_lock)
        {
            Move(migration.Id, vm is null ? TargetState.Failed : TargetState.Resumed);
            _current = null;
            _resumed = vm;
            _lastError = vm is null ? reply.Error : null;
        }

        var written = reply.Clone();
        _reports.Queue(() => TargetReport.Of(migration.Id, vm is null ? TargetOutcome.Failed : TargetOutcome.Resumed,
            written, written.Error, migration.CpuAtStart));
        reply.PhasesMs["other"] =
            Math.Max(0, Stopwatch.GetElapsedTime(entered).TotalMilliseconds - reply.PhasesMs.Values.Sum());
        if (vm is not null)
        {
            _ = RunAfterAsync(migration, vm, reply);
        }
        else
        {
            StopIfOnce();
        }

        return reply;
    }

    /// <summary>Receiving -> failed on the source's request; refused (false) in any other state.</summary>
    public CancelReply Cancel(CancelRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        IncomingMigration? migration;
        lock (_lock)
        {
            migration = _current;
            if (migration is null || !string.Equals(migration.Id, request.MigrationId, StringComparison.Ordinal))
            {
                return new CancelReply { Cancelled = false };
            }
        }

        return new CancelReply { Cancelled = Fail(migration, $"cancelled by the source: {request.Reason}") };
    }

    public StatusReply Status()
    {
        lock (_lock)
        {
            return new StatusReply
            {
                State = _state.ToWire(),
                MigrationId = _current?.Id ?? _lastId ?? string.Empty,
                PagesReceived = (ulong)(_current?.PagesReceived ?? 0),
                BytesReceived = (ulong)(_current?.BytesReceived ?? 0),
                Round = (uint)(_current?.MaxRound ?? 0),
                Error = _lastError ?? string.Empty,
            };
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _current?.Dispose();
            _current = null;
            _preallocated?.Dispose();
            _preallocated = null;
            _resumed?.Dispose();
            _resumed = null;
        }
    }

    private IncomingMigration CurrentLocked(string? migrationId, TargetState expected)
    {
        if (_current is null)
        {
            throw RpcErrors.FailedPrecondition(
                $"no migration is being received (state {_state.ToWire()}); call Begin first");
        }

        if (!string.Equals(_current.Id, migrationId, StringComparison.Ordinal))
        {
            throw RpcErrors.FailedPrecondition(
                $"migration {migrationId} is not the one being received ({_current.Id})");
        }

        if (_state != expected)
        {
            throw RpcErrors.FailedPrecondition(
                $"migration {migrationId} is {_state.ToWire()}, not {expected.ToWire()}");
        }

        return _current;
    }

    /// <summary>Sets the state; called under the lock only.</summary>
    private void Move(string id, TargetState next)
    {
        TargetLog.StateChanged(_log, id, _state.ToWire(), next.ToWire());
        _state = next;
    }

    private async Task RunAfterAsync(IncomingMigration migration, VirtualMachine vm, CompleteReply reply)
    {
        if (_options.RunAfterSeconds is not double seconds)
        {
            _ = Task.Run(StopIfOnce); // not on the Complete call's thread: stopping waits for the report file
            return;
        }

        await Task.Delay(TimeSpan.FromSeconds(seconds)).ConfigureAwait(false);
        var check = RunAfterCheck.Run(vm, migration.Id, seconds, _log);
        _reports.Queue(() => TargetReport.Of(migration.Id,
            check.Ok ? TargetOutcome.Resumed : TargetOutcome.FailedAfterResume,
            reply, check.Ok ? null : check.Text, migration.CpuAtStart, check.Text));
        StopIfOnce();
    }

    private void StopIfOnce()
    {
        if (_options.Once)
        {
            _reports.Flush(TimeSpan.FromSeconds(30));
            _lifetime.StopApplication();
        }
    }
}
