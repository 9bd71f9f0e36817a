using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;

namespace Migration.Shared.Tests.Guest;

public class VirtualMachineTests
{
    [Theory]
    [InlineData(WorkloadKind.Churn, DirtyLogMode.Eager)]
    [InlineData(WorkloadKind.Busy, DirtyLogMode.Manual)]
    public void Threads_PauseQuiescesMemory_AndResumeContinues(WorkloadKind kind, DirtyLogMode mode)
    {
        using var vm = VirtualMachine.Boot(new GuestConfig
        {
            RamBytes = 32L << 20,
            Vcpus = 2,
            DirtyLogMode = mode,
            Workload = new WorkloadOptions { Kind = kind, Seed = 3 },
        });
        vm.Start();
        SpinUntil(() => vm.PageWrites > 1000);
        vm.Pause();
        Assert.Equal(VmRunState.Paused, vm.State);

        long writes = vm.PageWrites;
        var hash = TestSupport.Hashing.Of(vm.Ram);
        Thread.Sleep(50);
        Assert.Equal(writes, vm.PageWrites);
        Assert.Equal(hash, TestSupport.Hashing.Of(vm.Ram));
        var check = vm.Kernel.SelfCheck();
        Assert.True(check.Ok, check.ToString());

        vm.Resume();
        SpinUntil(() => vm.PageWrites > writes + 1000);
        vm.Shutdown();
        Assert.Empty(vm.Crashes);
        Assert.True(vm.Kernel.SelfCheck().Ok);
    }

    [Fact]
    public void StateMachine_RejectsOutOfOrderCalls()
    {
        using var vm = VirtualMachine.Boot(new GuestConfig { RamBytes = 8L << 20, Vcpus = 1 });
        Assert.Throws<InvalidOperationException>(vm.Pause);
        vm.Start();
        Assert.Throws<InvalidOperationException>(vm.Start);
        Assert.Throws<InvalidOperationException>(() => vm.SaveVcpuStates());
        vm.Pause();
        Assert.Single(vm.SaveVcpuStates());
    }

    private static void SpinUntil(Func<bool> condition)
    {
        Assert.True(SpinWait.SpinUntil(condition, TimeSpan.FromSeconds(20)), "condition not met within 20 s");
    }
}
