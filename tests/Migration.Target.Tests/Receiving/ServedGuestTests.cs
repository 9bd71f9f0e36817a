using Grpc.Core;
using Microsoft.Extensions.Time.Testing;
using Migration.Protocol;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;
using Migration.Target.Receiving;

namespace Migration.Target.Tests.Receiving;

/// <summary>
/// The resumed guest as the management API sees it (<see cref="ServedGuest"/>), and what follows the resume
/// (<see cref="AfterResume"/>): served while it runs, gone once it migrated onward or ran its <c>--run-after</c> time,
/// and the target idle again.
/// </summary>
public sealed class ServedGuestTests
{
    [Fact]
    public void AResumedGuest_IsServed_AndOnceItMigratedOnward_TheTargetIsIdle()
    {
        var switchover = Verifying(out var guest);
        using var target = Targets.New(switchover);
        Assert.Null(target.Served.WithGuest((vm, _) => vm));
        Assert.Contains("no guest has been received (target idle)", target.Served.WithGuest((_, why) => why),
            StringComparison.Ordinal);
        var owner = target.BeginAs("a");
        VirtualMachine? announced = null;
        target.Served.Resumed += vm => announced = vm;

        Assert.True(target.Complete(new CompleteRequest { MigrationId = "a" }, owner).Resumed);

        var resumed = guest()!;
        Assert.Same(resumed, announced);
        Assert.Same(resumed, target.Served.WithGuest((vm, _) => vm));
        Assert.Same(resumed, target.Served.WithOnwardGuest(vm => vm));
        Assert.Equal(StatusCode.FailedPrecondition,
            Assert.Throws<RpcException>(() => target.Begin(Targets.Begin("b"), default)).StatusCode);

        target.Served.MigratedOnward(resumed, gone: false); // failed onward: it runs on here
        Assert.Equal(TargetState.Resumed, target.State);
        target.Served.MigratedOnward(resumed, gone: true);
        Assert.Equal(TargetState.Idle, target.State);
        Assert.Null(target.Served.WithGuest((vm, _) => vm));
        target.BeginAs("b");
    }

    [Fact]
    public async Task AGuestWithRunAfter_IsStoppedAndChecked_WhenTheInjectedClockSaysSo()
    {
        var clock = new FakeTimeProvider();
        var switchover = Verifying(out var guest);
        using var target = Targets.New(switchover, TargetOptions.Defaults with { RunAfterSeconds = 2 }, clock);
        var stopped = new TaskCompletionSource<VirtualMachine>(TaskCreationOptions.RunContinuationsAsynchronously);
        target.Served.Stopped += vm => stopped.TrySetResult(vm);
        var owner = target.BeginAs("a");
        target.Complete(new CompleteRequest { MigrationId = "a" }, owner);
        var onward = Assert.Throws<RpcException>(() => target.Served.WithOnwardGuest(vm => vm));
        Assert.Contains("--run-after", onward.Status.Detail, StringComparison.Ordinal);

        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(TargetState.Resumed, target.State);
        Assert.Same(guest(), target.Served.WithGuest((vm, _) => vm));
        clock.Advance(TimeSpan.FromSeconds(1));

        Assert.Same(guest(), await stopped.Task.WaitAsync(TimeSpan.FromSeconds(30)));
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (target.State != TargetState.Idle && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10);
        }

        Assert.Equal(TargetState.Idle, target.State);
        target.BeginAs("b");
    }

    /// <summary>A switchover that verifies and hands over a small real guest (not started).</summary>
    private static ScriptedSwitchover Verifying(out Func<VirtualMachine?> guest)
    {
        VirtualMachine? booted = null;
        guest = () => booted;
        return new ScriptedSwitchover
        {
            Result = (migration, _) =>
            {
                migration.Dispose();
                booted = VirtualMachine.Boot(new GuestConfig { RamBytes = 16L << 20, Vcpus = 1 });
                return (new CompleteReply { Verified = true }, booted);
            },
        };
    }
}
