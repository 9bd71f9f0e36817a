using System.Text.Json;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Shared.Machine;
using Migration.Target.Diagnostics;
using Migration.Target.Receiving;

namespace Migration.Target.Tests.Receiving;

/// <summary>A switchover the test controls: it can wait for a signal, fail, throw or succeed.</summary>
internal sealed class ScriptedSwitchover : ISwitchover
{
    public ManualResetEventSlim Entered { get; } = new();

    public ManualResetEventSlim Release { get; } = new(initialState: true);

    public Func<IncomingMigration, CompleteRequest, (CompleteReply, VirtualMachine?)> Result { get; set; } =
        (migration, _) =>
        {
            migration.Dispose();
            return (new CompleteReply { Error = "digests differ" }, null);
        };

    /// <summary>Resume-first's rebuild; by default a small real VM (not started) that Confirm then judges.</summary>
    public Func<IncomingMigration, CompleteRequest, (CompleteReply, PendingConfirm?)> PrepareResult { get; set; } =
        (migration, _) =>
        {
            migration.Dispose();
            var vm = VirtualMachine.Boot(new GuestConfig { RamBytes = 16L << 20, Vcpus = 1 });
            return (new CompleteReply { Provisional = true },
                new PendingConfirm(vm, null, null, vm.Kernel.SnapshotDescriptors()));
        };

    /// <summary>What Confirm decides; by default whatever the request's self-check says.</summary>
    public Func<ConfirmRequest, CompleteReply> ConfirmResult { get; set; } =
        request => new CompleteReply
        {
            Verified = request.SelfCheckOk,
            Error = request.SelfCheckOk ? string.Empty : "self-check failed",
        };

    public (CompleteReply Reply, VirtualMachine? Verified) Run(IncomingMigration migration, CompleteRequest request)
    {
        Entered.Set();
        Assert.True(Release.Wait(TimeSpan.FromSeconds(30)), "the test never released the switchover");
        return Result(migration, request);
    }

    /// <summary>The VM the last Prepare handed over, to see whether the target runs or stopped it.</summary>
    public VirtualMachine? Prepared { get; private set; }

    public (CompleteReply Reply, PendingConfirm? Pending) Prepare(IncomingMigration migration,
        CompleteRequest request)
    {
        var result = PrepareResult(migration, request);
        Prepared = result.Item2?.Vm;
        return result;
    }

    public int Rehearsals { get; private set; }

    public (CompleteReply Reply, IDisposable? Running) Rehearse(IncomingMigration migration, CompleteRequest request)
    {
        Rehearsals++;
        return (new CompleteReply(), null);
    }

    public CompleteReply Confirm(IncomingMigration migration, PendingConfirm pending, ConfirmRequest request)
    {
        Entered.Set();
        Assert.True(Release.Wait(TimeSpan.FromSeconds(30)), "the test never released the confirm");
        return ConfirmResult(request);
    }
}

internal sealed class StillRunning : IHostApplicationLifetime
{
    public CancellationToken ApplicationStarted => CancellationToken.None;

    public CancellationToken ApplicationStopping => CancellationToken.None;

    public CancellationToken ApplicationStopped => CancellationToken.None;

    public int StopRequests { get; private set; }

    public void StopApplication() => StopRequests++;
}

internal static class Targets
{
    /// <summary>
    /// A target state machine on a fake clock: its lease checks (and a run-after wait) run only when the test
    /// advances the clock, or calls <see cref="IncomingMigrations.ExpireLeases"/>.
    /// </summary>
    public static IncomingMigrations New(ISwitchover switchover, TargetOptions? options = null,
        TimeProvider? time = null, TargetMetrics? metrics = null)
    {
        options ??= TargetOptions.Defaults;
        return new IncomingMigrations(options, switchover,
            new TargetReportWriter(options, NullLogger<TargetReportWriter>.Instance), new StillRunning(),
            NullLogger<IncomingMigrations>.Instance, time ?? new FakeTimeProvider(), metrics: metrics);
    }

    /// <summary>Begins a migration as its source does; returns the credentials its later calls need.</summary>
    public static CallerCredentials BeginAs(this IncomingMigrations target, string id) =>
        new(target.Begin(Begin(id), default).MigrationKey, null);

    public static BeginRequest Begin(string id, long ramBytes = 8L << 20, int vcpus = 1)
    {
        var config = new GuestConfig { RamBytes = ramBytes, Vcpus = vcpus };
        return new BeginRequest
        {
            MigrationId = id,
            RamBytes = (ulong)ramBytes,
            PageSize = PageGeometry.PageSize,
            Vcpus = (uint)vcpus,
            GuestConfigJson = JsonSerializer.Serialize(config, WireJson.Default.GuestConfig),
        };
    }
}
