using Migration.Management;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;
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

    private readonly ServedGuest _served;
    private readonly OutgoingMigrations _outgoing;

    public TargetManagementHost(IncomingMigrations migrations, TargetOptions options, ILoggerFactory logging)
    {
        ArgumentNullException.ThrowIfNull(options);
        _served = migrations.Served;
        _outgoing = new OutgoingMigrations(options.Onward, logging, Console.Out, Events, Role, Guests);
        _served.Resumed += vm => Events.Attach(vm, Guests.IdOf(vm));
        _served.Stopped += Stopped;
    }

    public string Role => "target";

    public VmEventHub Events { get; } = new();

    public GuestIds Guests { get; } = new("this target");

    public T WithVm<T>(Func<VirtualMachine?, string, T> use) => _served.WithGuest(use);

    public MigrationInfo StartMigration(StartMigrationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return _served.WithGuest((served, why) =>
        {
            Guests.Bind(served, why, request.GuestId); // under the same lock as the start: the guest cannot change
            return _served.WithOnwardGuest(vm => _outgoing.Start(vm, request, (_, report) =>
                _served.MigratedOnward(vm, report.Status is MigrationStatus.Completed or MigrationStatus.Unknown)));
        });
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

    /// <summary>
    /// The guest stopped here (its --run-after time ran out): calls naming it are refused, its watches end.
    /// </summary>
    private void Stopped(VirtualMachine vm)
    {
        const string Why = "it ran its --run-after time here and was stopped and checked";
        string id = Guests.Left(vm, Why);
        Events.End(id, OutgoingMigrations.Precondition(Guests.Gone(id, Why)));
    }

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
