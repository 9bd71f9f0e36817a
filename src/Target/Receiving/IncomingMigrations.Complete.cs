using Migration.Protocol;
using Migration.Shared.Hosting;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;

namespace Migration.Target.Receiving;

/// <summary>
/// The controller's switchover half: Complete and Confirm take a receiving migration through verifying to a decision
/// (resumed or discarded), written down before it is acted on, then published (<see cref="AfterResume"/>). A Cancel
/// or the lease that discards a guest awaiting Confirm ends it the same way (<see cref="Decide"/>).
/// </summary>
internal sealed partial class IncomingMigrations
{
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
        long entered = _time.GetTimestamp();
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
                Move(new ReceiverState.Verifying(migration));
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

            return WithOther(rehearsed, entered);
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
            long resume = _time.GetTimestamp();
            vm.Start();
            reply.Resumed = true;
            reply.PhasesMs["resume"] = _time.GetElapsedTime(resume).TotalMilliseconds;
        }

        _metrics?.Switchover.Record(_time.GetElapsedTime(entered).TotalMilliseconds);
        Publish(migration, reply, vm);
        return WithOther(reply, entered);
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

        long resume = _time.GetTimestamp();
        pending.Vm.Start();
        reply.PhasesMs["resume"] = _time.GetElapsedTime(resume).TotalMilliseconds;
        lock (_lock)
        {
            // Running before anyone can see it: a Confirm, a Cancel or the lease finds a started guest.
            migration.Touch(); // the lease now waits for Confirm
            Move(new ReceiverState.AwaitingConfirm(migration, pending, resume));
        }

        _metrics?.Switchover.Record(_time.GetElapsedTime(entered).TotalMilliseconds);
        return WithOther(reply, entered);
    }

    /// <summary>The reply with the time its phases do not account for, since the call entered.</summary>
    private CompleteReply WithOther(CompleteReply reply, long entered)
    {
        reply.PhasesMs["other"] =
            Math.Max(0, _time.GetElapsedTime(entered).TotalMilliseconds - reply.PhasesMs.Values.Sum());
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
        ReceiverState.AwaitingConfirm held;
        lock (_lock)
        {
            var migration = CurrentLocked(request.MigrationId, caller, TargetState.Verifying);
            held = _state as ReceiverState.AwaitingConfirm
                ?? throw RpcErrors.FailedPrecondition(
                    $"migration {migration.Id} is not waiting for Confirm (it did not ask to resume first)");
            Move(new ReceiverState.Verifying(migration)); // taken: the lease cannot discard it now
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

        reply.PhasesMs["heldOutputs"] = _time.GetElapsedTime(held.ResumedAt).TotalMilliseconds;
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
            Move(vm is null ? new ReceiverState.Failed(reply.Error) : new ReceiverState.Resumed(migration.Id, vm));
            Remember(migration, vm is null ? MigrationOutcome.Discarded : MigrationOutcome.Resumed, reply.Error);
        }

        if (vm is not null)
        {
            Served.Announce(vm);
        }
    }

    /// <summary>
    /// What follows a decision: the migration's per-page tables go, then the report, then the run-after check of a
    /// resumed guest, or the cleanup.
    /// </summary>
    private void Publish(IncomingMigration migration, CompleteReply reply, VirtualMachine? vm)
    {
        migration.Dispose(); // decided: nothing reads its tables again (its guest, if any, owns the RAM)
        var written = reply.Clone();
        _reports.Queue(() => TargetReport.Of(migration.Id, vm is null ? TargetOutcome.Failed : TargetOutcome.Resumed,
            written, written.Error, migration.CpuAtStart));
        if (vm is not null)
        {
            _after.Resumed(migration, vm, reply);
        }
        else
        {
            _after.Ended();
        }
    }
}
