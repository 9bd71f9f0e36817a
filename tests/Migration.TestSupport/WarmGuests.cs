using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;

namespace Migration.TestSupport;

/// <summary>Booted, running guests for the engine's tests, which start migrating only once a guest is warm.</summary>
public static class WarmGuests
{
    /// <summary>
    /// A 16 MiB, one-vCPU guest running the idle workload (writing <paramref name="dirtyPagesPerSecond"/> pages a
    /// second, or the workload's default), returned once it is warm.
    /// </summary>
    /// <exception cref="TimeoutException">It did not warm up within 30 s.</exception>
    public static VirtualMachine Idle(double? dirtyPagesPerSecond = null)
    {
        var workload = new WorkloadOptions { Kind = WorkloadKind.Idle };
        var vm = VirtualMachine.Boot(new GuestConfig
        {
            RamBytes = 16L << 20,
            Vcpus = 1,
            Workload = dirtyPagesPerSecond is double rate ? workload with { IdleDirtyPagesPerSecond = rate } : workload,
        });
        vm.Start();
        if (!SpinWait.SpinUntil(() => vm.IsWarm, TimeSpan.FromSeconds(30)))
        {
            vm.Dispose();
            throw new TimeoutException("guest did not warm up");
        }

        return vm;
    }
}
