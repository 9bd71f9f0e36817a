using Grpc.Core;
using Migration.Management;
using Migration.Shared.Guest;
using Migration.Target.Receiving;

namespace Migration.Target.Services;

/// <summary>
/// The target's side of the management API: the guest it received, while that guest runs here (balloon, events).
/// Migrating a received guest onward is not offered: the target has no precopy engine.
/// </summary>
internal sealed class TargetManagementHost : IManagementHost, IDisposable
{
    private readonly IncomingMigrations _migrations;

    public TargetManagementHost(IncomingMigrations migrations)
    {
        _migrations = migrations;
        migrations.GuestResumed += Events.Attach;
    }

    public string Role => "target";

    public VmEventHub Events { get; } = new();

    public T WithVm<T>(Func<VirtualMachine?, string, T> use) => _migrations.WithServedGuest(use);

    public MigrationInfo StartMigration(StartMigrationRequest request) =>
        throw new RpcException(new Status(StatusCode.FailedPrecondition,
            "a target does not migrate the guest it received onward; run the guest with the source's `run` to " +
            "migrate it through this API"));

    public MigrationInfo QueryMigration() => new() { Status = "none" };

    public MigrationInfo CancelMigration() =>
        throw new RpcException(new Status(StatusCode.FailedPrecondition, "no migration of a guest runs from here"));

    public void Dispose() => Events.Dispose();
}
