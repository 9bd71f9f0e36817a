using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;

namespace Migration.Shared.Tests.Machine;

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

    /// <summary>
    /// The drivers' threads sleep until a device wakes them: the VM must wire both devices' interrupts to its thread
    /// host, or a new balloon target or hint command id waits out the sleep.
    /// </summary>
    [Fact]
    public void TheDevicesInterrupts_WakeTheGuestThreads()
    {
        var host = new CountingHost();
        using var vm = VirtualMachine.Boot(
            new GuestConfig { RamBytes = 32L << 20, Vcpus = 1, Balloon = new() { Stats = true } }, null,
            GuestSeams.Production with { ThreadHost = () => host });

        int before = host.Wakes;
        vm.Balloon.SetTargetPages(1024);
        Assert.True(host.Wakes > before, "a new balloon target did not wake the guest threads");

        before = host.Wakes;
        vm.HintDevice.Restore(Migration.Shared.Balloon.HintStatus.Done, 5);
        Assert.True(host.Wakes > before, "a change of the hint command id did not wake the guest threads");
    }

    /// <summary>A thread host that runs nothing and counts wake-ups.</summary>
    private sealed class CountingHost : IGuestThreadHost
    {
        private int _wakes;

        public int Wakes => Volatile.Read(ref _wakes);

        public IReadOnlyList<string> Crashes => [];

        public void Start(IReadOnlyList<GuestThread> threads)
        {
        }

        public void Pause()
        {
        }

        public void Resume()
        {
        }

        public void Wake() => Interlocked.Increment(ref _wakes);

        public void Shutdown()
        {
        }
    }

    private static void SpinUntil(Func<bool> condition)
    {
        Assert.True(SpinWait.SpinUntil(condition, TimeSpan.FromSeconds(20)), "condition not met within 20 s");
    }
}
