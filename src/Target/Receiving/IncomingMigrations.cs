using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Shared.Hosting;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;
using Migration.Target.Diagnostics;

namespace Migration.Target.Receiving;

/// <summary>
/// The target's one-migration-at-a-time controller: the protocol's calls (Begin, page streams, Complete, Confirm,
/// Cancel, Status) over one state, a <see cref="ReceiverState"/> that holds what that state owns, and whose wire form
/// is the <see cref="TargetState"/>: idle -> receiving -> verifying -> resumed, or -> failed from receiving or
/// verifying; failed (and idle) take the next Begin, and a resumed guest that stops (<c>--run-after</c>) or migrates
/// onward leaves the target idle again. Every change is a check and a move (<see cref="Move"/>) under one lock, so no
/// call sees a half-made transition: a Cancel that arrives while a Complete verifies finds "verifying" and is refused,
/// and a switchover that fails in any way ends in "failed", never stuck in "verifying".
/// </summary>
/// <remarks>
/// <para>Handover: the target writes its decision for a migration (resumed or discarded) down before it acts on it
/// (<see cref="DecisionLog"/>), so a source that lost the Complete reply asks (Status by id) and learns for certain
/// whether the guest runs here. Only a migration whose digests match and whose guest passes its self-check is resumed
/// (<see cref="ISwitchover"/>). Resume-first, the guest runs while still "verifying"
/// (<see cref="ReceiverState.AwaitingConfirm"/>), its outputs held, and becomes "resumed" only on a matching Confirm;
/// a mismatch, a Cancel before Confirm or the lease discards it.</para>
/// <para>Ownership: Begin hands out a key (<see cref="MigrationOwner"/>); every later call about that migration must
/// carry it (and, with mutual TLS, come with the same client certificate).</para>
/// <para>Complete and Confirm, the switchover half, are in <c>IncomingMigrations.Complete.cs</c>. Beside it: the leases
/// (<see cref="Leases"/>), the resumed guest as the management API sees it (<see cref="ServedGuest"/>), and what
/// follows a decision (<see cref="AfterResume"/>).</para>
/// </remarks>
internal sealed partial class IncomingMigrations : IDisposable
{
    private readonly object _lock = new();
    private readonly TargetOptions _options;
    private readonly ISwitchover _switchover;
    private readonly TargetReportWriter _reports;
    private readonly ILogger<IncomingMigrations> _log;
    private readonly TimeProvider _time;
    private readonly DecisionLog _decisions = new();
    private readonly AfterResume _after;
    private readonly Leases _leases;
    private readonly TargetMetrics? _metrics;
    private ReceiverState _state = new ReceiverState.Idle();

    /// <summary>RAM made ready at start (<c>--prealloc</c>) for the first migration of its size, whatever the state.</summary>
    private GuestRam? _preallocated;

    public IncomingMigrations(TargetOptions options, ISwitchover switchover, TargetReportWriter reports,
        IHostApplicationLifetime lifetime, ILogger<IncomingMigrations> log, TimeProvider? time = null,
        Hosting.IdleMemory? idleMemory = null, TargetMetrics? metrics = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        idleMemory ??= new Hosting.IdleMemory();
        _metrics = metrics;
        _options = options;
        _switchover = switchover;
        _reports = reports;
        _log = log;
        _time = time ?? TimeProvider.System;
        if (options.PreallocBytes is long bytes)
        {
            _preallocated = GuestRam.Allocate(bytes);
            double ms = _preallocated.Populate();
            TargetLog.Preallocated(_log, bytes >> 20, (long)ms);
        }

        Served = new ServedGuest(this, options, idleMemory);
        _after = new AfterResume(options, Served, reports, lifetime, idleMemory, _time, log);
        _leases = new Leases(options.Lease, _time, ExpireLeases);
    }

    /// <summary>This process, as the source sees it: a different id at the same address never saw its migration.</summary>
    public string InstanceId { get; } = Guid.NewGuid().ToString("n");

    public TargetState State => Read(static state => state.Wire);

    /// <summary>The guest resumed here, for the management API and an onward migration.</summary>
    public ServedGuest Served { get; }

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
            if (_state.Wire.IsBusy())
            {
                throw RpcErrors.FailedPrecondition($"target is busy with a migration ({_state.Wire.ToWire()})");
            }

            if (_state is ReceiverState.Resumed or ReceiverState.Stopping)
            {
                throw RpcErrors.FailedPrecondition("target already runs a migrated guest");
            }

            if (_state is ReceiverState.Closed)
            {
                throw RpcErrors.FailedPrecondition("target is shutting down");
            }

            if (_decisions.Contains(request.MigrationId))
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
                begun = new IncomingMigration(request.MigrationId, config, request.GuestConfigJson, owner,
                    ram ?? GuestRam.Allocate(config.RamBytes), _time, _metrics)
                {
                    ProtocolVersion = ProtocolVersions.Declared(request.ProtocolVersion),
                    DeltaPages = request.Features.Contains(WireNames.DeltaPagesFeature),
                };
            }
            catch (OutOfMemoryException ex)
            {
                throw RpcErrors.ResourceExhausted($"cannot host {config.RamBytes} bytes of guest RAM: {ex.Message}");
            }

            Move(new ReceiverState.Receiving(begun));
            _metrics?.Active.Add(1);
        }

        // Beside Begin, not in it (the first of a shape boots a scratch guest; a slow Begin loses its reply, and with
        // it the key): the rehearsals' scratch guest, spare threads so that the resume starts none, and the room for
        // the allocator's copy (16 bytes a page, touched: 54 ms of Begin for a 4 GiB guest when it was made in it).
        // The log line too: a fresh target's first one compiles the logger's path for its arguments (about 12 ms).
        _ = Task.Run(() =>
        {
            TargetLog.Receiving(_log, request.MigrationId, config.RamBytes >> 20, config.Vcpus);
            RestoreProbe? probe = null;
            try
            {
                VirtualMachine.ReserveThreads(config);
                probe = RestoreProbe.TryPrepare(config);
            }
            finally
            {
                begun.UseProbe(probe); // settled either way: a rehearsal waits for it (IncomingMigration.AwaitProbe)
            }

            begun.PrepareAllocator();
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
            Features =
            {
                WireNames.Lz4Feature, WireNames.RoundTagsFeature, WireNames.ResumeFirstFeature,
                WireNames.DeltaPagesFeature,
            },
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
            if (_state is not ReceiverState.Receiving { Migration: var receiving }
                || !ReferenceEquals(receiving, migration))
            {
                return false;
            }

            Move(new ReceiverState.Failed(reason));
            Remember(migration, MigrationOutcome.Discarded, reason);
        }

        migration.Dispose();
        TargetLog.Failed(_log, migration.Id, reason);
        _reports.Queue(() => TargetReport.Of(migration.Id, TargetOutcome.Failed, null, reason, migration.CpuAtStart));
        _after.Ended();
        return true;
    }

    /// <summary>
    /// Receiving -> failed on the owner's request. Too late (verifying, resumed) or already over: not cancelled, and
    /// the reply says where the migration stands, which for the source is as good as a Status call.
    /// </summary>
    public CancelReply Cancel(CancelRequest request, CallerCredentials caller)
    {
        ArgumentNullException.ThrowIfNull(request);
        IncomingMigration? migration;
        ReceiverState.AwaitingConfirm? held = null;
        lock (_lock)
        {
            migration = _state.InFlight;
            bool current = migration is not null
                && string.Equals(migration.Id, request.MigrationId, StringComparison.Ordinal)
                && migration.Owner.Admits(caller);
            if (!current)
            {
                return new CancelReply { Cancelled = false, Outcome = OutcomeLocked(request.MigrationId, caller) };
            }

            if (_state is ReceiverState.AwaitingConfirm awaiting)
            {
                // resumed first, not confirmed: nothing of it has left, so it may go
                held = awaiting;
                Move(new ReceiverState.Verifying(awaiting.Migration));
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
            var reply = new StatusReply { State = _state.Wire.ToWire(), InstanceId = InstanceId };
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
            if (_state.InFlight is { } current && current.Id == request.MigrationId)
            {
                if (_state is ReceiverState.Receiving)
                {
                    current.Touch(); // asking keeps a receiving migration; a guest waiting for Confirm waits for Confirm
                }

                reply.PagesReceived = (ulong)current.PagesReceived;
                reply.BytesReceived = (ulong)current.BytesReceived;
                reply.Round = (uint)current.MaxRound;
            }
            else
            {
                reply.Error = _decisions.ErrorOf(request.MigrationId);
            }

            return reply;
        }
    }

    /// <summary>
    /// Discards a receiving migration whose source has been quiet for longer than the lease, and a guest resumed first
    /// whose Confirm did not come within it. Run by the lease timer (<see cref="Leases"/>).
    /// </summary>
    public void ExpireLeases()
    {
        IncomingMigration? stale = null;
        ReceiverState.AwaitingConfirm? unconfirmed = null;
        lock (_lock)
        {
            if (_state is ReceiverState.Receiving receiving && _leases.Expired(receiving.Migration))
            {
                stale = receiving.Migration;
            }
            else if (_state is ReceiverState.AwaitingConfirm awaiting && _leases.Expired(awaiting.Migration))
            {
                unconfirmed = awaiting;
                Move(new ReceiverState.Verifying(awaiting.Migration));
            }
        }

        if (unconfirmed is not null)
        {
            unconfirmed.Pending.Vm.Dispose();
            string reason = _leases.NoConfirm;
            TargetLog.Failed(_log, unconfirmed.Migration.Id, reason);
            Decide(unconfirmed.Migration, new CompleteReply { Error = reason }, vm: null);
        }

        if (stale is not null)
        {
            Fail(stale, _leases.QuietSource);
        }
    }

    /// <summary>Runs <paramref name="read"/> on the state under the lock: the state cannot change meanwhile.</summary>
    internal T Read<T>(Func<ReceiverState, T> read)
    {
        lock (_lock)
        {
            return read(_state);
        }
    }

    /// <summary>Resumed -> stopping: <c>--run-after</c>'s time ran out and the guest is served no more.</summary>
    internal void StopServing(VirtualMachine vm)
    {
        lock (_lock)
        {
            if (_state is ReceiverState.Resumed resumed && ReferenceEquals(resumed.Vm, vm))
            {
                Move(new ReceiverState.Stopping(resumed.Id, vm));
            }
        }
    }

    /// <summary>
    /// Resumed or stopping -> idle: the guest left (migrated onward, or stopped and checked). False if it is not the
    /// resumed guest (any more).
    /// </summary>
    internal bool LetGo(VirtualMachine vm)
    {
        ArgumentNullException.ThrowIfNull(vm);
        lock (_lock)
        {
            if (!ReferenceEquals(ResumedVm(_state), vm))
            {
                return false;
            }

            Move(new ReceiverState.Idle());
            return true;
        }
    }

    public void Dispose()
    {
        _leases.Dispose();
        lock (_lock)
        {
            if (_state is ReceiverState.Closed)
            {
                return;
            }

            var last = _state;
            Move(new ReceiverState.Closed(last.Wire));
            _preallocated?.Dispose();
            _preallocated = null;
            last.InFlight?.Dispose();
            (last as ReceiverState.AwaitingConfirm)?.Pending.Vm.Dispose();
            ResumedVm(last)?.Dispose();
        }
    }

    /// <summary>
    /// The one transition: checks <paramref name="next"/> is allowed from the current state
    /// (<see cref="ReceiverState.Check"/>), logs a change of the wire state, and moves. Called under the lock only.
    /// </summary>
    private void Move(ReceiverState next)
    {
        ReceiverState.Check(_state, next);
        if (_state.Wire != next.Wire)
        {
            TargetLog.StateChanged(_log, next.MigrationId ?? _state.MigrationId ?? "(none)", _state.Wire.ToWire(),
                next.Wire.ToWire());
        }

        _state = next;
    }

    private static VirtualMachine? ResumedVm(ReceiverState state) => state switch
    {
        ReceiverState.Resumed resumed => resumed.Vm,
        ReceiverState.Stopping stopping => stopping.Vm,
        _ => null,
    };

    private IncomingMigration CurrentLocked(string? migrationId, CallerCredentials caller, TargetState expected)
    {
        if (_state.InFlight is not { } current
            || !string.Equals(current.Id, migrationId, StringComparison.Ordinal))
        {
            throw RpcErrors.FailedPrecondition(
                $"migration {Printable(migrationId)} is not being received here (state {_state.Wire.ToWire()}); " +
                "call Begin first");
        }

        if (!current.Owner.Admits(caller))
        {
            throw RpcErrors.Unauthenticated(
                $"migration {migrationId} belongs to another client: the {WireNames.MigrationKeyHeader} header " +
                "(and client certificate) must be the ones it began with");
        }

        if (_state.Wire != expected)
        {
            throw RpcErrors.FailedPrecondition(
                $"migration {migrationId} is {_state.Wire.ToWire()}, not {expected.ToWire()}");
        }

        return current;
    }

    private MigrationOutcome OutcomeLocked(string? migrationId, CallerCredentials caller)
    {
        if (migrationId is null)
        {
            return MigrationOutcome.Unknown;
        }

        if (_state.InFlight is { } current && current.Id == migrationId)
        {
            return !current.Owner.Admits(caller) ? MigrationOutcome.Unknown
                : _state.Wire == TargetState.Verifying ? MigrationOutcome.Verifying
                : MigrationOutcome.Receiving;
        }

        return _decisions.OutcomeOf(migrationId, caller);
    }

    /// <summary>Writes a migration's decision down; called under the lock, before the decision is acted on.</summary>
    private void Remember(IncomingMigration migration, MigrationOutcome outcome, string? error)
    {
        if (_decisions.Remember(migration, outcome, error))
        {
            _metrics?.Ended(outcome);
        }
    }

    /// <summary>An id as it may appear in a message: bounded and printable, whatever a client sent.</summary>
    private static string Printable(string? id) =>
        id is null ? "(none)" : MigrationIds.Problem(id) is null ? id : "(malformed id)";
}
