using Migration.Shared.Guest;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;
using Migration.Target.Receiving;

namespace Migration.Target.Tests.Receiving;

/// <summary>
/// The target's transition rule (<see cref="ReceiverState.Check"/>), which every state change of
/// <see cref="IncomingMigrations"/> goes through: exactly the listed moves are allowed, every other is refused.
/// </summary>
public sealed class ReceiverStateTests : IDisposable
{
    private readonly IncomingMigration _a = Migration("a");
    private readonly IncomingMigration _b = Migration("b");
    private readonly VirtualMachine _vm = VirtualMachine.Boot(new GuestConfig { RamBytes = 16L << 20, Vcpus = 1 });
    private readonly VirtualMachine _other = VirtualMachine.Boot(new GuestConfig { RamBytes = 16L << 20, Vcpus = 1 });

    public void Dispose()
    {
        _a.Dispose();
        _b.Dispose();
        _vm.Dispose();
        _other.Dispose();
    }

    [Fact]
    public void OnlyTheListedMoves_AreAllowed_AndCheckRefusesEveryOther()
    {
        var idle = new ReceiverState.Idle();
        var receivingA = new ReceiverState.Receiving(_a);
        var receivingB = new ReceiverState.Receiving(_b);
        var verifyingA = new ReceiverState.Verifying(_a);
        var verifyingB = new ReceiverState.Verifying(_b);
        var awaitingA = new ReceiverState.AwaitingConfirm(_a, Pending(_vm), 0);
        var awaitingB = new ReceiverState.AwaitingConfirm(_b, Pending(_vm), 0);
        var resumedA = new ReceiverState.Resumed("a", _vm);
        var resumedB = new ReceiverState.Resumed("b", _other);
        var stoppingA = new ReceiverState.Stopping("a", _vm);
        var stoppingOther = new ReceiverState.Stopping("a", _other);
        var failed = new ReceiverState.Failed("digests differ");
        var closed = new ReceiverState.Closed(TargetState.Idle);
        ReceiverState[] all =
        [
            idle, receivingA, receivingB, verifyingA, verifyingB, awaitingA, awaitingB, resumedA, resumedB,
            stoppingA, stoppingOther, failed, closed,
        ];
        var allowed = new HashSet<(ReceiverState, ReceiverState)>(ReferencePairs.Instance)
        {
            (idle, receivingA), (idle, receivingB), (failed, receivingA), (failed, receivingB),
            (receivingA, verifyingA), (receivingB, verifyingB), (receivingA, failed), (receivingB, failed),
            (verifyingA, awaitingA), (verifyingB, awaitingB), (verifyingA, resumedA), (verifyingB, resumedB),
            (verifyingA, failed), (verifyingB, failed),
            (awaitingA, verifyingA), (awaitingB, verifyingB),
            (resumedA, stoppingA), (resumedB, stoppingOther), (resumedA, idle), (resumedB, idle),
            (stoppingA, idle), (stoppingOther, idle),
        };
        foreach (var from in all.Where(s => s is not ReceiverState.Closed))
        {
            allowed.Add((from, closed));
        }

        foreach (var from in all)
        {
            foreach (var next in all)
            {
                bool legal = allowed.Contains((from, next));
                Assert.True(legal == ReceiverState.Allows(from, next),
                    $"{Name(from)} -> {Name(next)} should be {(legal ? "allowed" : "refused")}");
                if (legal)
                {
                    ReceiverState.Check(from, next);
                }
                else
                {
                    Assert.Throws<InvalidOperationException>(() => ReceiverState.Check(from, next));
                }
            }
        }
    }

    [Fact]
    public void EachStateDerivesItsWireState()
    {
        Assert.Equal(TargetState.Idle, new ReceiverState.Idle().Wire);
        Assert.Equal(TargetState.Receiving, new ReceiverState.Receiving(_a).Wire);
        Assert.Equal(TargetState.Verifying, new ReceiverState.Verifying(_a).Wire);
        Assert.Equal(TargetState.Verifying, new ReceiverState.AwaitingConfirm(_a, Pending(_vm), 0).Wire);
        Assert.Equal(TargetState.Resumed, new ReceiverState.Resumed("a", _vm).Wire);
        Assert.Equal(TargetState.Resumed, new ReceiverState.Stopping("a", _vm).Wire);
        Assert.Equal(TargetState.Failed, new ReceiverState.Failed("why").Wire);
        Assert.Equal(TargetState.Receiving, new ReceiverState.Closed(TargetState.Receiving).Wire);
    }

    [Fact]
    public void AClosedTarget_RefusesBegin_AndLetsNoGuestGo()
    {
        var target = Targets.New(new ScriptedSwitchover());
        target.Dispose();
        target.Dispose(); // twice is harmless

        var refused = Assert.Throws<Grpc.Core.RpcException>(() => target.Begin(Targets.Begin("a"), default));
        Assert.Equal(Grpc.Core.StatusCode.FailedPrecondition, refused.StatusCode);
        Assert.False(target.LetGo(_vm));
        Assert.Equal(TargetState.Idle, target.State);
    }

    private static PendingConfirm Pending(VirtualMachine vm) => new(vm, null, null, vm.Kernel.SnapshotDescriptors());

    private static IncomingMigration Migration(string id) =>
        new(id, new GuestConfig { RamBytes = 4L << 20, Vcpus = 1 }, "{}", MigrationOwner.New(null),
            GuestRam.Allocate(4L << 20), TimeProvider.System);

    private static string Name(ReceiverState state) => state.GetType().Name;

    /// <summary>Pairs of states compared by reference: two states of the same type are different test cases.</summary>
    private sealed class ReferencePairs : IEqualityComparer<(ReceiverState, ReceiverState)>
    {
        public static readonly ReferencePairs Instance = new();

        public bool Equals((ReceiverState, ReceiverState) x, (ReceiverState, ReceiverState) y) =>
            ReferenceEquals(x.Item1, y.Item1) && ReferenceEquals(x.Item2, y.Item2);

        public int GetHashCode((ReceiverState, ReceiverState) obj) =>
            HashCode.Combine(
                System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(obj.Item1),
                System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(obj.Item2));
    }
}
