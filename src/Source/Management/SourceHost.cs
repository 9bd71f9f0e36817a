using Microsoft.Extensions.Logging;
using Migration.Management;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;

namespace Migration.Source.Management;

/// <summary>
/// The source's side of the management API (<c>run</c>): one running guest, and at most one migration of it at a
/// time. A completed migration ends the guest here (it runs on the target); a failed or cancelled one leaves it
/// running, ready for the next attempt.
/// </summary>
internal sealed class SourceHost : IManagementHost, IDisposable
{
    private readonly object _gate = new();
    private readonly OutgoingMigrations _outgoing;
    private VirtualMachine? _vm;
    private string _why = "no guest booted";

    public SourceHost(VirtualMachine vm, MigrationOptions defaults, ILoggerFactory logging, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(vm);
        _vm = vm;
        _outgoing = new OutgoingMigrations(defaults, logging, output, Events, Role, Guests);
        Events.Attach(vm, Guests.IdOf(vm));
    }

    public string Role => "source";

    public VmEventHub Events { get; } = new();

    public GuestIds Guests { get; } = new("this process");

    /// <summary>The migration in flight, for a caller that must wait for it (shutdown).</summary>
    public Task? Migration => _outgoing.Current;

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
            Guests.Bind(_vm, _why, request.GuestId);
            var vm = _vm!;
            return _outgoing.Start(vm, request, (target, report) => Ended(vm, target, report));
        }
    }

    public MigrationInfo QueryMigration(QueryMigrationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return WithVm((vm, why) => _outgoing.Query(vm, why, request.GuestId));
    }

    public MigrationInfo CancelMigration(CancelMigrationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return WithVm((vm, why) => _outgoing.Cancel(vm, why, request.GuestId));
    }

    public MigrationInfo SetMigrationParameters(SetMigrationParametersRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return WithVm((vm, why) => _outgoing.SetParameters(vm, why, request));
    }

    public void Dispose()
    {
        Events.Dispose();
        _outgoing.Dispose();
    }

    private void Ended(VirtualMachine vm, Uri target, MigrationReport report)
    {
        if (report.Status is not (MigrationStatus.Completed or MigrationStatus.Unknown))
        {
            return; // failed or cancelled: the guest runs on here
        }

        lock (_gate)
        {
            vm.Shutdown(); // completed: the guest runs on the target; unknown: it may, so never here again
            _vm = null;
            _why = report.Status == MigrationStatus.Completed
                ? $"the guest migrated to {target}"
                : $"the handover to {target} has an unknown outcome; the guest never runs here again";
        }
    }
}
