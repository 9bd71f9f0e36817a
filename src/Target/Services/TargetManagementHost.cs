using Migration.Management;
using Migration.Shared.Guest;
using Migration.Shared.Reporting;
using Migration.Target.Receiving;

namespace Migration.Target.Services;

/// <summary>
/// The target's side of the management API: the guest it received, while that guest runs here (balloon, events),
/// and a migration of it onward to the next target, with the same engine and controls as the source's <c>run</c>.
/// Once the guest has left, this target is idle and receives the next one.
/// </summary>
internal sealed class TargetManagementHost : IManagementHost, IDisposable
{
    /// <summary>How long shutdown waits for a cancelled onward migration to let go of the guest.</summary>
    private static readonly TimeSpan StopWait = TimeSpan.FromSeconds(30);

    private readonly IncomingMigrations _migrations;
    private readonly OutgoingMigrations _outgoing;

    public TargetManagementHost(IncomingMigrations migrations, TargetOptions options, ILoggerFactory logging)
    {
        ArgumentNullException.ThrowIfNull(options);
        _migrations = migrations;
        _outgoing = new OutgoingMigrations(options.Onward, logging, Console.Out, Events, Role);
        migrations.GuestResumed += Events.Attach;
    }

    public string Role => "target";

    public VmEventHub Events { get; } = new();

    public T WithVm<T>(Func<VirtualMachine?, string, T> use) => _migrations.WithServedGuest(use);

    public MigrationInfo StartMigration(StartMigrationRequest request) =>
        _migrations.WithOnwardGuest(vm => _outgoing.Start(vm, request, (_, report) =>
            _migrations.MigratedOnward(vm, report.Status is MigrationStatus.Completed or MigrationStatus.Unknown)));

    public MigrationInfo QueryMigration() => _outgoing.Query();

    public MigrationInfo CancelMigration() => _outgoing.Cancel();

    /// <summary>Cancels an onward migration and waits for it, so the guest is not freed under the engine.</summary>
    public void Dispose()
    {
        var running = _outgoing.Current;
        _outgoing.Dispose();
        try
        {
            running?.Wait(StopWait);
        }
        catch (AggregateException)
        {
            // its outcome was reported where it ended
        }

        Events.Dispose();
    }
}
