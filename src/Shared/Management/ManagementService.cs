using System.Threading.Channels;
using Grpc.Core;
using Migration.Shared.Balloon;
using Migration.Shared.Guest;
using Migration.Shared.Hosting;
using Migration.Shared.Machine;

namespace Migration.Management;

/// <summary>
/// The management API (proto/management.proto) over whichever guest <see cref="IManagementHost"/> runs now. Every
/// refusal is a status code with a sentence: INVALID_ARGUMENT for a value out of range or bytes that do not decode,
/// FAILED_PRECONDITION when the VM's state does not allow the call. Bound by <see cref="ManagementBinding"/> rather
/// than the generated base class, whose marshallers answer undecodable bytes with UNKNOWN. Its one wait reads the clock
/// through <paramref name="time"/> (the host's, when it registers one; else the system's).
/// </summary>
public sealed class ManagementService(IManagementHost host, TimeProvider? time = null) : ManagementBinding
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public override Task<VmInfo> QueryVm(QueryVmRequest request, ServerCallContext context) =>
        Task.FromResult(host.WithVm((vm, why) => vm is null
            ? new VmInfo { Role = host.Role, State = "none", Detail = why }
            : new VmInfo
            {
                Role = host.Role,
                State = vm.State.ToString().ToLowerInvariant(),
                RamBytes = (ulong)vm.Ram.SizeBytes,
                Vcpus = (uint)vm.Config.Vcpus,
                Workload = vm.Config.Workload.Kind.ToString().ToLowerInvariant(),
                FreePages = (ulong)Math.Max(0, vm.Kernel.FreePages),
                GuestId = host.Guests.IdOf(vm),
            }));

    public override Task<BalloonInfo> SetBalloon(SetBalloonRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        return Task.FromResult(Running(request.GuestId, vm => SetBalloon(vm, request)));
    }

    public override Task<BalloonInfo> QueryBalloon(QueryBalloonRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        return Task.FromResult(Running(request.GuestId, InfoOf));
    }

    public override async Task<GuestStatsInfo> QueryStats(QueryStatsRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(context);
        var (device, before) = Running(request.GuestId, vm =>
        {
            var device = StatsDevice(vm);
            var before = device.GuestStats;
            return (device, request.Refresh && device.RequestStats() ? before : null);
        });
        if (before is not null)
        {
            // The guest refills and queues its buffer from its driver thread: a millisecond or so while it runs.
            long asked = _time.GetTimestamp();
            while (device.GuestStats.Reports == before.Reports && _time.GetElapsedTime(asked) < RefreshWait)
            {
                await Task.Delay(RefreshPoll, _time, context.CancellationToken).ConfigureAwait(false);
            }
        }

        return StatsOf(device.GuestStats);
    }

    public override Task<GuestStatsInfo> SetStatsPolling(SetStatsPollingRequest request, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.IntervalSeconds > MaxPollingSeconds)
        {
            throw RpcErrors.InvalidArgument(
                $"interval_seconds {request.IntervalSeconds} is above {MaxPollingSeconds} (a day)");
        }

        return Task.FromResult(Running(request.GuestId, vm =>
        {
            var device = StatsDevice(vm);
            device.SetStatsPolling((int)request.IntervalSeconds);
            return StatsOf(device.GuestStats);
        }));
    }

    private const uint MaxPollingSeconds = 86400;

    private static readonly TimeSpan RefreshWait = TimeSpan.FromSeconds(1);

    private static readonly TimeSpan RefreshPoll = TimeSpan.FromMilliseconds(5);

    private static BalloonDevice StatsDevice(VirtualMachine vm) =>
        BalloonFeatureBits.Has(vm.Balloon.Features, BalloonFeatureBits.StatsQueue)
            ? vm.Balloon
            : throw RpcErrors.FailedPrecondition(
                "this guest's balloon has no statistics queue (started with --balloon-stats off)");

    private static GuestStatsInfo StatsOf(GuestStats stats)
    {
        var info = new GuestStatsInfo
        {
            LastUpdate = stats.LastUpdate,
            PollingIntervalSeconds = (uint)stats.PollingIntervalSeconds,
            Reports = (ulong)stats.Reports,
        };
        for (int tag = 0; tag < BalloonStats.Count; tag++)
        {
            info.Stats[BalloonStats.QemuKeys[tag]] = stats.Values[tag];
        }

        return info;
    }

    private static BalloonInfo SetBalloon(VirtualMachine vm, SetBalloonRequest request)
    {
        if (vm.State != VmRunState.Running)
        {
            // paused for a switchover: its device state may be saved already, and a change now would be lost
            throw RpcErrors.FailedPrecondition(
                $"the guest is {vm.State.ToString().ToLowerInvariant()}; set the balloon while it runs");
        }

        long ramPages = vm.Ram.PageCount;
        long logicalPages = (long)Math.Min(request.LogicalSizeBytes >> PageGeometry.PageShift, (ulong)long.MaxValue);
        if (request.LogicalSizeBytes > (ulong)vm.Ram.SizeBytes)
        {
            throw RpcErrors.InvalidArgument($"logical_size_bytes {request.LogicalSizeBytes} is larger than the " +
                $"guest's RAM ({vm.Ram.SizeBytes} bytes)");
        }

        if (logicalPages < 1)
        {
            throw RpcErrors.InvalidArgument(
                $"logical_size_bytes {request.LogicalSizeBytes} leaves the guest less than one page");
        }

        try
        {
            vm.Balloon.SetTargetPages(ramPages - logicalPages);
        }
        catch (InvalidOperationException ex)
        {
            throw RpcErrors.FailedPrecondition(ex.Message);
        }

        return InfoOf(vm);
    }

    public override async Task WatchEvents(WatchEventsRequest request, IServerStreamWriter<VmEvent> responseStream,
        ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(responseStream);
        ArgumentNullException.ThrowIfNull(context);
        // Registered while the guest is held: it cannot leave in between, so its departure ends this watch.
        var (reader, lease) = Running(request.GuestId, vm => host.Events.Watch(host.Guests.IdOf(vm)));
        using (lease)
        {
            try
            {
                // Headers go out once the watch is registered: a client that awaits them sees every later event.
                await context.WriteResponseHeadersAsync([]).ConfigureAwait(false);
                await foreach (var e in reader.ReadAllAsync(context.CancellationToken).ConfigureAwait(false))
                {
                    await responseStream.WriteAsync(e, context.CancellationToken).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) when (context.CancellationToken.IsCancellationRequested)
            {
                // the client went away
            }
            catch (ChannelClosedException ex) when (ex.InnerException is RpcException ending)
            {
                throw ending; // the guest left: the status says what became of it
            }
        }
    }

    public override Task<MigrationInfo> StartMigration(StartMigrationRequest request, ServerCallContext context) =>
        Task.FromResult(host.StartMigration(request));

    public override Task<MigrationInfo> QueryMigration(QueryMigrationRequest request, ServerCallContext context) =>
        Task.FromResult(host.QueryMigration(request));

    public override Task<MigrationInfo> CancelMigration(CancelMigrationRequest request, ServerCallContext context) =>
        Task.FromResult(host.CancelMigration(request));

    public override Task<MigrationInfo> SetMigrationParameters(SetMigrationParametersRequest request,
        ServerCallContext context) =>
        Task.FromResult(host.SetMigrationParameters(request));

    /// <summary>The balloon's state as <c>query-balloon</c> shows it.</summary>
    public static BalloonInfo InfoOf(VirtualMachine vm)
    {
        ArgumentNullException.ThrowIfNull(vm);
        var s = vm.Balloon.Stats;
        var r = vm.Balloon.ReportingStats;
        return new BalloonInfo
        {
            LogicalSizeBytes = (ulong)(vm.Ram.SizeBytes - (s.ActualPages << PageGeometry.PageShift)),
            RamBytes = (ulong)vm.Ram.SizeBytes,
            TargetPages = (ulong)s.TargetPages,
            ActualPages = (ulong)s.ActualPages,
            HeldPages = (ulong)s.HeldPages,
            Encoding = vm.Balloon.Encoding.ToString().ToLowerInvariant(),
            Features = $"0x{vm.Balloon.Features:x}",
            InflateRequests = (ulong)s.InflateRequests,
            DeflateRequests = (ulong)s.DeflateRequests,
            PagesInflated = (ulong)s.PagesInflated,
            PagesDeflated = (ulong)s.PagesDeflated,
            GuestEvents = (ulong)s.GuestEvents,
            DeviceErrors = (ulong)s.DeviceErrors,
            LastError = s.LastError ?? string.Empty,
            PuffFailures = (ulong)vm.InflateDriver.PuffFailures,
            OomDeflatedPages = (ulong)vm.InflateDriver.OomDeflatedPages,
            Reporting = r is not null,
            ReportingRequests = (ulong)(r?.Reports ?? 0),
            ReportingPagesDiscarded = (ulong)(r?.PagesDiscarded ?? 0),
            ReportingPagesKeptPoisoned = (ulong)(r?.PagesKeptPoisoned ?? 0),
            ReportingDiscardMapPages = (ulong)(r?.DiscardMapPages ?? 0),
            ReportedFreePages = r is null ? 0 : (ulong)vm.Kernel.ReportedPages,
        };
    }

    /// <summary>
    /// Runs <paramref name="use"/> on the guest <paramref name="guestId"/> names (empty: the one running now) while
    /// it runs here, or refuses, saying what became of it.
    /// </summary>
    private T Running<T>(string guestId, Func<VirtualMachine, T> use) => host.WithVm((vm, why) =>
    {
        host.Guests.Bind(vm, why, guestId);
        return use(vm!);
    });
}
