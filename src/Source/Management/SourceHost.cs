using Microsoft.Extensions.Logging;
using Migration.Management;
using Migration.Shared.Guest;
using Migration.Shared.Precopy;
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
        _outgoing = new OutgoingMigrations(defaults, logging, output, Events, Role);
        Events.Attach(vm);
    }

    public string Role => "source";

    public VmEventHub Events { get; } = new();

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
        lock (_gate)
        {
            return _vm is { } vm
                ? _outgoing.Start(vm, request, (target, report) => Ended(vm, target, report))
                : throw OutgoingMigrations.Precondition($"no guest runs here: {_why}");
        }
    }

    public MigrationInfo QueryMigration() => _outgoing.Query();

    public MigrationInfo CancelMigration() => _outgoing.Cancel();

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
