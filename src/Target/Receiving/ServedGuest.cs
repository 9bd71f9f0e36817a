using Migration.Shared.Hosting;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;

namespace Migration.Target.Receiving;

/// <summary>
/// The guest resumed here, as the management API and an onward migration see it: who may use it, whether it may
/// leave, and what is left to do once it has left. The guest itself is the controller's state
/// (<see cref="ReceiverState.Resumed"/>), read under the controller's lock, so it is neither stopped nor freed while a
/// caller uses it; this class holds no state of its own, only the events the management API watches.
/// </summary>
internal sealed class ServedGuest(IncomingMigrations migrations, TargetOptions options, Hosting.IdleMemory idleMemory)
{
    /// <summary>Raised once a verified guest was resumed here (the management API publishes its events).</summary>
    public event Action<VirtualMachine>? Resumed;

    /// <summary>Raised when the served guest stops here (<c>--run-after</c>): the management API lets it go.</summary>
    public event Action<VirtualMachine>? Stopped;

    /// <summary>
    /// Runs <paramref name="use"/> on the guest resumed here while it runs (null when there is none, with why); the
    /// guest is neither stopped nor freed meanwhile.
    /// </summary>
    public T WithGuest<T>(Func<VirtualMachine?, string, T> use)
    {
        ArgumentNullException.ThrowIfNull(use);
        return migrations.Read(state => state is ReceiverState.Resumed resumed
            ? use(resumed.Vm, string.Empty)
            : use(null, WhyNone(state)));
    }

    /// <summary>
    /// Runs <paramref name="start"/> on the guest resumed here, if it may migrate onward, or throws why not. Only a
    /// guest that runs here for good may leave: a target with <c>--run-after</c> stops and checks its guest itself.
    /// </summary>
    public T WithOnwardGuest<T>(Func<VirtualMachine, T> start)
    {
        ArgumentNullException.ThrowIfNull(start);
        return migrations.Read(state =>
        {
            if (state is not ReceiverState.Resumed { Vm: var vm })
            {
                throw RpcErrors.FailedPrecondition(WhyNone(state));
            }

            if (options.RunAfterSeconds is double seconds)
            {
                throw RpcErrors.FailedPrecondition($"this target stops and checks its guest after --run-after " +
                    $"{seconds:0.###} s; start it without --run-after to migrate a received guest onward");
            }

            return start(vm);
        });
    }

    /// <summary>
    /// An onward migration of the served guest ended. Completed (or with an unknown outcome, when the next target
    /// may run it), the guest never runs here again: it is freed and this target is idle, ready to receive the next
    /// one. Failed or cancelled, the guest runs on here.
    /// </summary>
    public void MigratedOnward(VirtualMachine vm, bool gone)
    {
        ArgumentNullException.ThrowIfNull(vm);
        if (!gone || !migrations.LetGo(vm))
        {
            return; // it runs on; or it was let go already (shutting down)
        }

        vm.Dispose();
        idleMemory.Release();
    }

    /// <summary>The controller resumed <paramref name="vm"/> for good: from now on it is served.</summary>
    internal void Announce(VirtualMachine vm) => Resumed?.Invoke(vm);

    /// <summary>
    /// <c>--run-after</c>'s time ran out: the guest is served no more (the management API lets go of it) before it is
    /// stopped and checked.
    /// </summary>
    internal void StopServing(VirtualMachine vm)
    {
        migrations.StopServing(vm);
        Stopped?.Invoke(vm);
    }

    /// <summary>The guest was stopped, checked and freed: the target is idle. False if it was let go already.</summary>
    internal bool Release(VirtualMachine vm) => migrations.LetGo(vm);

    /// <summary>Why no guest is served here.</summary>
    private static string WhyNone(ReceiverState state) => state is ReceiverState.Stopping
        ? "the received guest is being stopped and checked"
        : $"no guest has been received (target {state.Wire.ToWire()})";
}
