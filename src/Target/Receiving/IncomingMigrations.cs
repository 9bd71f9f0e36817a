using System.Diagnostics;
using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Shared.Hosting;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;
using Migration.Target.Diagnostics;

namespace Migration.Target.Receiving;

/// <summary>
/// The target's one-migration-at-a-time state machine (<see cref="TargetState"/>): idle -> receiving -> verifying ->
/// resumed, or -> failed from receiving or verifying; failed (and idle) take the next Begin, and a resumed guest that
/// stops (<c>--run-after</c>) leaves the target idle again. Every change goes through one check-and-set under one
/// lock, so no call sees a half-made transition: a Cancel that arrives while a Complete verifies finds "verifying"
/// and is refused, and a switchover that fails in any way ends in "failed", never stuck in "verifying".
/// </summary>
/// <remarks>
/// <para>Handover: the target records its decision for a migration (resumed or discarded) before it acts on it, and
/// keeps the decisions of recent migrations, so a source that lost the Complete reply asks (Status by id) and learns
/// for certain whether the guest runs here. Only a migration whose digests match and whose guest passes its self-check
/// is resumed (<see cref="ISwitchover"/>). Resume-first, the guest runs while still "verifying", its outputs held, and
/// becomes "resumed" only on a matching Confirm; a mismatch, a Cancel before Confirm or the lease discards it.</para>
/// <para>Ownership: Begin hands out a key (<see cref="MigrationOwner"/>); every later call about that migration must
/// carry it (and, with mutual TLS, come with the same client certificate).</para>
/// <para>Leases: a receiving migration whose source does nothing for <see cref="TargetOptions.Lease"/> (no call, no
/// batch, no stream opened or closed) is discarded as abandoned (<see cref="ExpireLeases"/>).</para>
/// </remarks>
internal sealed class IncomingMigrations : IDisposable
{
    /// <summary>Decisions of this many past migrations stay queryable.</summary>
    private const int RememberedOutcomes = 64;

    private readonly object _lock = new();
    private readonly TargetOptions _options;
    private readonly ISwitchover _switchover;
    private readonly TargetReportWriter _reports;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly ILogger<IncomingMigrations> _log;
    private readonly TimeProvider _time;
    private readonly Dictionary<string, Decision> _decisions = new(StringComparer.Ordinal);
    private readonly Queue<string> _decisionOrder = new();
    private readonly ITimer? _leaseTimer;
    private readonly Hosting.IdleMemory _idleMemory;
    private readonly TargetMetrics? _metrics;
    private TargetState _state = TargetState.Idle;
    private IncomingMigration? _current;
    private GuestRam? _preallocated;
    private VirtualMachine? _resumed;
    private VirtualMachine? _serving; // the resumed guest while it runs: what the management API may touch
    private string? _resumedId;
    private Provisional? _provisional;
    private string? _lastError;

    public IncomingMigrations(TargetOptions options, ISwitchover switchover, TargetReportWriter reports,
        IHostApplicationLifetime lifetime, ILogger<IncomingMigrations> log, TimeProvider? time = null,
        Hosting.IdleMemory? idleMemory = null, TargetMetrics? metrics = null)
    {
        _idleMemory = idleMemory ?? new Hosting.IdleMemory();
        _metrics = metrics;
        _options = options;
        _switchover = switchover;
        _reports = reports;
        _lifetime = lifetime;
        _log = log;
        _time = time ?? TimeProvider.System;
        if (options.PreallocBytes is long bytes)
        {
            _preallocated = GuestRam.Allocate(bytes);
            double ms = _preallocated.Populate();
            TargetLog.Preallocated(_log, bytes >> 20, (long)ms);
        }

        if (time is null)
        {
            var period = TimeSpan.FromSeconds(Math.Clamp(options.Lease.TotalSeconds / 4, 0.05, 1));
            _leaseTimer = TimeProvider.System.CreateTimer(_ => ExpireLeases(), null, period, period);
        }
    }

    /// <summary>This process, as the source sees it: a different id at the same address never saw its migration.</summary>
    public string InstanceId { get; } = Guid.NewGuid().ToString("n");

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

    /// <summary>Raised once a verified guest was resumed here (the management API publishes its events).</summary>
    public event Action<VirtualMachine>? GuestResumed;

    /// <summary>Raised when the served guest stops here (<c>--run-after</c>): the management API lets it go.</summary>
    public event Action<VirtualMachine>? GuestStopped;

    /// <summary>
    /// Runs <paramref name="use"/> on the guest resumed here while it runs (null when there is none, with why); the
    /// guest is neither stopped nor freed meanwhile.
    /// </summary>
    public T WithServedGuest<T>(Func<VirtualMachine?, string, T> use)
    {
        ArgumentNullException.ThrowIfNull(use);
        lock (_lock)
        {
            return use(_serving, _serving is not null ? string.Empty : NoServedGuestLocked());
        }
    }

    /// <summary>Why no guest is served here; called under the lock.</summary>
    private string NoServedGuestLocked() => _resumed is not null
        ? "the received guest is being stopped and checked"
        : $"no guest has been received (target {_state.ToWire()})";

    /// <summary>
    /// Runs <paramref name="start"/> on the guest resumed here, if it may migrate onward, or throws why not. Only a
    /// guest that runs here for good may leave: a target with <c>--run-after</c> stops and checks its guest itself.
    /// </summary>
    public T WithOnwardGuest<T>(Func<VirtualMachine, T> start)
    {
        ArgumentNullException.ThrowIfNull(start);
        lock (_lock)
        {
            if (_serving is not { } vm)
            {
                throw RpcErrors.FailedPrecondition(NoServedGuestLocked());
            }

            if (_options.RunAfterSeconds is double seconds)
            {
                throw RpcErrors.FailedPrecondition($"this target stops and checks its guest after --run-after " +
                    $"{seconds:0.###} s; start it without --run-after to migrate a received guest onward");
            }

            return start(vm);
        }
    }

    /// <summary>
    /// An onward migration of the served guest ended. Completed (or with an unknown outcome, when the next target
    /// may run it), the guest never runs here again: it is freed and this target is idle, ready to receive the next
    /// one. Failed or cancelled, the guest runs on here.
    /// </summary>
    public void MigratedOnward(VirtualMachine vm, bool gone)
    {
        ArgumentNullException.ThrowIfNull(vm);
        if (!gone)
        {
            return;
        }

        lock (_lock)
        {
            if (!ReferenceEquals(_resumed, vm))
            {
                return; // already let go (shutting down)
            }

            _serving = null;
            _resumed = null;
            Move(_resumedId ?? "(onward)", TargetState.Idle);
            _resumedId = null;
        }

        vm.Dispose();
        _idleMemory.Release();
    }

    /// <summary>Idle or failed -> receiving: allocates the guest's RAM and answers with the target's limits.</summary>
    /// <param name="callAborted">
    /// The call's own token: a source that gave up on Begin before its reply never learns the key, so it cannot
    /// cancel; a migration begun for it is discarded here at once rather than holding the target for its lease.
    /// </param>
    public BeginReply Begin(BeginRequest request, CallerCredentials caller,
        CancellationToken callAborted = default)
    {
        var config = BeginRequestReader.Read(request);
        var owner = MigrationOwner.New(caller.CertificateThumbprint, request.MigrationKey);
        IncomingMigration begun;
        lock (_lock)
        {
            if (_state.IsBusy())
            {
                throw RpcErrors.FailedPrecondition($"target is busy with a migration ({_state.ToWire()})");
            }

            if (_resumed is not null)
            {
                throw RpcErrors.FailedPrecondition("target already runs a migrated guest");
            }

            if (_decisions.ContainsKey(request.MigrationId))
            {
                throw RpcErrors.AlreadyExists($"migration {request.MigrationId} was already received here");
            }

            GuestRam? ram = null;
            if (_preallocated is not null && _preallocated.SizeBytes == config.RamBytes)
            {
                (ram, _preallocated) = (_preallocated, null);
            }

            try
            {
                _current = new IncomingMigration(request.MigrationId, config, request.GuestConfigJson, owner,
                    ram ?? GuestRam.Allocate(config.RamBytes), _time, _metrics)
                {
                    ProtocolVersion = ProtocolVersions.Declared(request.ProtocolVersion),
                };
                begun = _current;
            }
            catch (OutOfMemoryException ex)
            {
                throw RpcErrors.ResourceExhausted($"cannot host {config.RamBytes} bytes of guest RAM: {ex.Message}");
            }

            Move(request.MigrationId, TargetState.Receiving);
            _lastError = null;
            _metrics?.Active.Add(1);
        }

        TargetLog.Receiving(_log, request.MigrationId, config.RamBytes >> 20, config.Vcpus);
        // Beside Begin, not in it (the first of a shape boots a scratch guest; a slow Begin loses its reply, and with
        // it the key): the rehearsals' scratch guest, and spare threads so that the resume starts none.
        _ = Task.Run(() =>
        {
            VirtualMachine.ReserveThreads(config);
            begun.UseProbe(RestoreProbe.TryPrepare(config));
        }, CancellationToken.None);
        if (callAborted.IsCancellationRequested)
        {
            Fail(begun, "the source gave up on Begin before its reply (a cancel while it was answered)");
            throw RpcErrors.Cancelled("Begin was cancelled by the caller; the migration was discarded");
        }

        return new BeginReply
        {
            MaxMessageBytes = (uint)_options.MaxMessageBytes,
            MaxPageBatchBytes = (uint)_options.MaxPageMessageBytes,
            ProtocolVersion = begun.ProtocolVersion,
            Features = { WireNames.Lz4Feature, WireNames.RoundTagsFeature, WireNames.ResumeFirstFeature },
            MigrationKey = owner.Key,
            InstanceId = InstanceId,
        };
    }

    /// <summary>The migration a page stream names, while it is receiving and the caller owns it.</summary>
    public IncomingMigration RequireReceiving(string? migrationId, CallerCredentials caller)
    {
        lock (_lock)
        {
            var migration = CurrentLocked(migrationId, caller, TargetState.Receiving);
            migration.Touch();
            return migration;
        }
    }

    /// <summary>Receiving -> failed: a bad batch or a broken stream discards the partial guest. False if not receiving.</summary>
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
            Remember(migration, MigrationOutcome.Discarded, reason);
            _current = null;
            _lastError = reason;
        }

        migration.Dispose();
        TargetLog.Failed(_log, migration.Id, reason);
        _reports.Queue(() => TargetReport.Of(migration.Id, TargetOutcome.Failed, null, reason, migration.CpuAtStart));
        Ended();
        return true;
    }

    /// <summary>
    /// Receiving -> verifying -> resumed or failed. The first step is atomic with the checks, so nothing can cancel or
    /// discard the migration while it verifies; whatever the switchover does, the state leaves "verifying". The
    /// decision is recorded before the guest starts, so a source that loses this reply can still learn it.
    /// </summary>
    /// <param name="afterReply">
    /// Takes what must outlive the reply: a rehearsal's running scratch guest, the probe's RAM. The service stops and
    /// frees it once the reply has gone out; by default it goes at once.
    /// </param>
    public CompleteReply Complete(CompleteRequest request, CallerCredentials caller,
        Action<IDisposable>? afterReply = null)
    {
        ArgumentNullException.ThrowIfNull(request);
        afterReply ??= static d => d.Dispose();
        long entered = Stopwatch.GetTimestamp();
        IncomingMigration migration;
        RestoreProbe? probe = null;
        lock (_lock)
        {
            migration = CurrentLocked(request.MigrationId, caller, TargetState.Receiving);
            if (request.Rehearsal)
            {
                migration.Touch();
            }
            else
            {
                Move(migration.Id, TargetState.Verifying);
                probe = migration.TakeProbe();
            }
        }

        if (request.Rehearsal)
        {
            // still receiving: nothing of the migration changed
            var (rehearsed, running) = _switchover.Rehearse(migration, request);
            if (running is not null)
            {
                afterReply(running);
            }

            rehearsed.PhasesMs["other"] =
                Math.Max(0, Stopwatch.GetElapsedTime(entered).TotalMilliseconds - rehearsed.PhasesMs.Values.Sum());
            return rehearsed;
        }

        if (probe is not null)
        {
            afterReply(probe); // its RAM is unmapped after the downtime, not in it
        }

        if (request.ResumeFirst)
        {
            return ResumeFirst(migration, request, entered);
        }

        var (reply, vm) = Guarded(migration, () => _switchover.Run(migration, request));

        Record(migration, reply, vm); // decided, and written down, before the guest runs
        if (vm is not null)
        {
            long resume = Stopwatch.GetTimestamp();
            vm.Start();
            reply.Resumed = true;
            reply.PhasesMs["resume"] = Stopwatch.GetElapsedTime(resume).TotalMilliseconds;
        }

        _metrics?.Switchover.Record(Stopwatch.GetElapsedTime(entered).TotalMilliseconds);
        Publish(migration, reply, vm);
        reply.PhasesMs["other"] =
            Math.Max(0, Stopwatch.GetElapsedTime(entered).TotalMilliseconds - reply.PhasesMs.Values.Sum());
        return reply;
    }

    /// <summary>
    /// Resume-first, first half: rebuild and start the guest with its outputs held (nothing about it leaves this
    /// process: no outcome but "verifying", no report, no run-after, no dump), still "verifying". Confirm decides; a
    /// source that never confirms loses the guest to the lease (<see cref="ExpireLeases"/>), as nothing was let out.
    /// </summary>
    private CompleteReply ResumeFirst(IncomingMigration migration, CompleteRequest request, long entered)
    {
        var (reply, pending) = Guarded(migration, () => _switchover.Prepare(migration, request));

        if (pending is null)
        {
            Decide(migration, reply, vm: null);
            return reply;
        }

        long resume = Stopwatch.GetTimestamp();
        pending.Vm.Start();
        reply.PhasesMs["resume"] = Stopwatch.GetElapsedTime(resume).TotalMilliseconds;
        lock (_lock)
        {
            // Running before anyone can see it: a Confirm, a Cancel or the lease finds a started guest.
            migration.Touch(); // the lease now waits for Confirm
            _provisional = new Provisional(migration, pending, resume);
        }

        _metrics?.Switchover.Record(Stopwatch.GetElapsedTime(entered).TotalMilliseconds);
        reply.PhasesMs["other"] =
            Math.Max(0, Stopwatch.GetElapsedTime(entered).TotalMilliseconds - reply.PhasesMs.Values.Sum());
        return reply;
    }

    /// <summary>
    /// The switchover's call with its one boundary: any failure ends in "failed" with the partial guest discarded (a
    /// stuck "verifying" would refuse every later Begin).
    /// </summary>
    private (CompleteReply Reply, T? Result) Guarded<T>(IncomingMigration migration,
        Func<(CompleteReply, T?)> switchover) where T : class
    {
        try
        {
            return switchover();
        }
#pragma warning disable CA1031 // the boundary itself
        catch (Exception ex)
#pragma warning restore CA1031
        {
            TargetLog.SwitchoverCrashed(_log, migration.Id, ex);
            migration.Dispose();
            return (new CompleteReply { Error = $"switchover failed: {ex.Message}" }, null);
        }
    }

    /// <summary>
    /// Resume-first, second half: verifying -> resumed (outputs released) when the source's digests match what
    /// arrived, else -> failed with the running copy stopped and discarded (the source then resumes its own).
    /// </summary>
    public CompleteReply Confirm(ConfirmRequest request, CallerCredentials caller)
    {
        ArgumentNullException.ThrowIfNull(request);
        Provisional held;
        lock (_lock)
        {
            var migration = CurrentLocked(request.MigrationId, caller, TargetState.Verifying);
            held = _provisional is { } p && ReferenceEquals(p.Migration, migration)
                ? p
                : throw RpcErrors.FailedPrecondition(
                    $"migration {migration.Id} is not waiting for Confirm (it did not ask to resume first)");
            _provisional = null; // taken: the lease cannot discard it now
        }

        CompleteReply reply;
        try
        {
            reply = _switchover.Confirm(held.Migration, held.Pending, request);
        }
#pragma warning disable CA1031 // the decision's boundary, as in Complete
        catch (Exception ex)
#pragma warning restore CA1031
        {
            TargetLog.SwitchoverCrashed(_log, held.Migration.Id, ex);
            reply = new CompleteReply { Error = $"confirm failed: {ex.Message}" };
        }

        reply.PhasesMs["heldOutputs"] = Stopwatch.GetElapsedTime(held.ResumedAt).TotalMilliseconds;
        if (reply.Verified)
        {
            reply.Resumed = true;
            Decide(held.Migration, reply, held.Pending.Vm);
        }
        else
        {
            held.Pending.Vm.Dispose(); // stops its threads, releases its RAM: no output of it ever left
            Decide(held.Migration, reply, vm: null);
        }

        return reply;
    }

    /// <summary>
    /// Writes the decision down and acts on it, out of verifying: resumed (the report, the run-after check) or failed.
    /// </summary>
    private void Decide(IncomingMigration migration, CompleteReply reply, VirtualMachine? vm)
    {
        Record(migration, reply, vm);
        Publish(migration, reply, vm);
    }

    /// <summary>
    /// Verifying -> resumed or failed, written down: from here a query by id answers for certain. The guest (if any)
    /// may start once this returns.
    /// </summary>
    private void Record(IncomingMigration migration, CompleteReply reply, VirtualMachine? vm)
    {
        lock (_lock)
        {
            Move(migration.Id, vm is null ? TargetState.Failed : TargetState.Resumed);
            Remember(migration, vm is null ? MigrationOutcome.Discarded : MigrationOutcome.Resumed, reply.Error);
            _current = null;
            _resumed = vm;
            _serving = vm;
            _resumedId = vm is null ? null : migration.Id;
            _lastError = vm is null ? reply.Error : null;
        }

        if (vm is not null)
        {
            GuestResumed?.Invoke(vm);
        }
    }

    /// <summary>What follows a decision: the report, then the run-after check of a resumed guest, or the cleanup.</summary>
    private void Publish(IncomingMigration migration, CompleteReply reply, VirtualMachine? vm)
    {
        var written = reply.Clone();
        _reports.Queue(() => TargetReport.Of(migration.Id, vm is null ? TargetOutcome.Failed : TargetOutcome.Resumed,
            written, written.Error, migration.CpuAtStart));
        if (vm is not null)
        {
            _ = RunAfterAsync(migration, vm, reply);
        }
        else
        {
            Ended();
        }
    }

    /// <summary>
    /// Receiving -> failed on the owner's request. Too late (verifying, resumed) or already over: not cancelled, and
    /// the reply says where the migration stands, which for the source is as good as a Status call.
    /// </summary>
    public CancelReply Cancel(CancelRequest request, CallerCredentials caller)
    {
        ArgumentNullException.ThrowIfNull(request);
        IncomingMigration? migration;
        Provisional? held = null;
        lock (_lock)
        {
            migration = _current;
            bool current = migration is not null
                && string.Equals(migration.Id, request.MigrationId, StringComparison.Ordinal)
                && migration.Owner.Admits(caller);
            if (!current)
            {
                return new CancelReply { Cancelled = false, Outcome = OutcomeLocked(request.MigrationId, caller) };
            }

            if (_provisional is { } p && ReferenceEquals(p.Migration, migration))
            {
                (held, _provisional) = (p, null); // resumed first, not confirmed: nothing of it has left, so it may go
            }
        }

        if (held is not null)
        {
            held.Pending.Vm.Dispose();
            var discarded = new CompleteReply { Error = $"cancelled by the source: {request.Reason}" };
            Decide(held.Migration, discarded, vm: null);
            lock (_lock)
            {
                return new CancelReply { Cancelled = true, Outcome = OutcomeLocked(request.MigrationId, caller) };
            }
        }

        bool cancelled = Fail(migration!, $"cancelled by the source: {request.Reason}");
        lock (_lock)
        {
            return new CancelReply { Cancelled = cancelled, Outcome = OutcomeLocked(request.MigrationId, caller) };
        }
    }

    /// <summary>
    /// The target's state; with a migration id and its key, that migration's outcome too. Without the key nothing
    /// about any migration is told (not even its id), so other clients learn only whether the target is busy.
    /// </summary>
    public StatusReply Status(StatusRequest request, CallerCredentials caller)
    {
        ArgumentNullException.ThrowIfNull(request);
        lock (_lock)
        {
            var reply = new StatusReply { State = _state.ToWire(), InstanceId = InstanceId };
            if (string.IsNullOrEmpty(request.MigrationId))
            {
                return reply;
            }

            reply.Outcome = OutcomeLocked(request.MigrationId, caller);
            if (reply.Outcome == MigrationOutcome.Unknown)
            {
                return reply;
            }

            reply.MigrationId = request.MigrationId;
            if (_current is { } current && current.Id == request.MigrationId)
            {
                if (_state == TargetState.Receiving)
                {
                    current.Touch(); // asking keeps a receiving migration; a guest waiting for Confirm waits for Confirm
                }

                reply.PagesReceived = (ulong)current.PagesReceived;
                reply.BytesReceived = (ulong)current.BytesReceived;
                reply.Round = (uint)current.MaxRound;
            }
            else if (_decisions.TryGetValue(request.MigrationId, out var decision))
            {
                reply.Error = decision.Error ?? string.Empty;
            }

            return reply;
        }
    }

    /// <summary>Discards a receiving migration whose source has been quiet for longer than the lease.</summary>
    public void ExpireLeases()
    {
        IncomingMigration? stale;
        Provisional? unconfirmed = null;
        lock (_lock)
        {
            stale = _state == TargetState.Receiving && _current is { } current && current.Idle > _options.Lease
                ? current
                : null;
            if (_provisional is { } p && p.Migration.Idle > _options.Lease)
            {
                (unconfirmed, _provisional) = (p, null);
            }
        }

        if (unconfirmed is not null)
        {
            unconfirmed.Pending.Vm.Dispose();
            string reason = "abandoned: the guest ran here with its outputs held, and the source sent no Confirm for " +
                $"{_options.Lease.TotalSeconds:F0} s; this copy is discarded";
            TargetLog.Failed(_log, unconfirmed.Migration.Id, reason);
            Decide(unconfirmed.Migration, new CompleteReply { Error = reason }, vm: null);
        }

        if (stale is not null)
        {
            Fail(stale, "abandoned: the source did nothing for this migration for " +
                $"{_options.Lease.TotalSeconds:F0} s " +
                "(no call, no page batch, no stream opened or closed)");
        }
    }

    public void Dispose()
    {
        _leaseTimer?.Dispose();
        lock (_lock)
        {
            _current?.Dispose();
            _current = null;
            _preallocated?.Dispose();
            _preallocated = null;
            _serving = null;
            _resumed?.Dispose();
            _resumed = null;
            _provisional?.Pending.Vm.Dispose();
            _provisional = null;
        }
    }

    private IncomingMigration CurrentLocked(string? migrationId, CallerCredentials caller, TargetState expected)
    {
        if (_current is null || !string.Equals(_current.Id, migrationId, StringComparison.Ordinal))
        {
            throw RpcErrors.FailedPrecondition(
                $"migration {Printable(migrationId)} is not being received here (state {_state.ToWire()}); " +
                "call Begin first");
        }

        if (!_current.Owner.Admits(caller))
        {
            throw RpcErrors.Unauthenticated(
                $"migration {migrationId} belongs to another client: the {WireNames.MigrationKeyHeader} header " +
                "(and client certificate) must be the ones it began with");
        }

        if (_state != expected)
        {
            throw RpcErrors.FailedPrecondition(
                $"migration {migrationId} is {_state.ToWire()}, not {expected.ToWire()}");
        }

        return _current;
    }

    private MigrationOutcome OutcomeLocked(string? migrationId, CallerCredentials caller)
    {
        if (migrationId is null)
        {
            return MigrationOutcome.Unknown;
        }

        if (_current is { } current && current.Id == migrationId)
        {
            return !current.Owner.Admits(caller) ? MigrationOutcome.Unknown
                : _state == TargetState.Verifying ? MigrationOutcome.Verifying
                : MigrationOutcome.Receiving;
        }

        return _decisions.TryGetValue(migrationId, out var decision) && decision.Owner.Admits(caller)
            ? decision.Outcome
            : MigrationOutcome.Unknown;
    }

    /// <summary>Writes a migration's decision down; called under the lock, before the decision is acted on.</summary>
    private void Remember(IncomingMigration migration, MigrationOutcome outcome, string? error)
    {
        if (_decisions.TryAdd(migration.Id, new Decision(migration.Owner, outcome, error)))
        {
            _metrics?.Ended(outcome);
            _decisionOrder.Enqueue(migration.Id);
            while (_decisionOrder.Count > RememberedOutcomes)
            {
                _decisions.Remove(_decisionOrder.Dequeue());
            }
        }
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
        lock (_lock)
        {
            _serving = ReferenceEquals(_serving, vm) ? null : _serving; // the API lets go before the guest stops
        }

        GuestStopped?.Invoke(vm);

        var check = RunAfterCheck.Run(vm, migration.Id, seconds, _log);
        _reports.Queue(() => TargetReport.Of(migration.Id,
            check.Ok ? TargetOutcome.Resumed : TargetOutcome.FailedAfterResume, reply, check.Ok ? null : check.Text,
            migration.CpuAtStart, check.Text));
        // The guest has been stopped and checked. Its memory goes back to the host before the target says it is
        // free, so "idle" means ready and as small as it started; meanwhile a Begin is told the guest still runs.
        vm.Dispose();
        if (!_options.Once)
        {
            _idleMemory.Release();
        }

        lock (_lock)
        {
            if (ReferenceEquals(_resumed, vm))
            {
                _resumed = null;
                Move(migration.Id, TargetState.Idle);
            }
        }

        StopIfOnce();
    }

    /// <summary>
    /// A migration is over and its guest gone: with --once the target exits; otherwise it gives the memory the
    /// migration took back to the host (<see cref="Hosting.IdleMemory"/>), off the caller's thread.
    /// </summary>
    private void Ended()
    {
        if (_options.Once)
        {
            StopIfOnce();
            return;
        }

        _ = Task.Run(_idleMemory.Release);
    }

    private void StopIfOnce()
    {
        if (_options.Once)
        {
            _reports.Flush(TimeSpan.FromSeconds(30));
            _lifetime.StopApplication();
        }
    }

    /// <summary>An id as it may appear in a message: bounded and printable, whatever a client sent.</summary>
    private static string Printable(string? id) =>
        id is null ? "(none)" : MigrationIds.Problem(id) is null ? id : "(malformed id)";

    private sealed record Decision(MigrationOwner Owner, MigrationOutcome Outcome, string? Error);

    /// <summary>A guest resumed first, its outputs held until Confirm.</summary>
    private sealed record Provisional(IncomingMigration Migration, PendingConfirm Pending, long ResumedAt);
}
