using Migration.Shared.Machine;

namespace Migration.Management;

/// <summary>
/// What a process that runs guests offers the management API: the guest it runs now (if any), its events, and on a
/// source the migration controls. The source's <c>run</c> command and the target implement it.
/// </summary>
public interface IManagementHost
{
    /// <summary>"source" or "target".</summary>
    string Role { get; }

    /// <summary>Where the events of every guest this process runs are published.</summary>
    VmEventHub Events { get; }

    /// <summary>The ids of the guests this process runs and ran; a request names one.</summary>
    GuestIds Guests { get; }

    /// <summary>
    /// Runs <paramref name="use"/> on the guest running here, or on null with why there is none. The guest is not
    /// stopped or freed while <paramref name="use"/> runs, so keep it short.
    /// </summary>
    T WithVm<T>(Func<VirtualMachine?, string, T> use);

    /// <summary>
    /// Starts migrating the guest the request names (if it runs here); throws <see cref="Grpc.Core.RpcException"/>
    /// when it cannot.
    /// </summary>
    MigrationInfo StartMigration(StartMigrationRequest request);

    MigrationInfo QueryMigration(QueryMigrationRequest request);

    MigrationInfo CancelMigration(CancelMigrationRequest request);

    /// <summary>Changes the running migration's settings from its next round; throws for a bad value.</summary>
    MigrationInfo SetMigrationParameters(SetMigrationParametersRequest request);
}
