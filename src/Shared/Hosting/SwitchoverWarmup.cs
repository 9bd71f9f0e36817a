using System.Text.Json;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Verification;

namespace Migration.Shared.Hosting;

/// <summary>
/// Runs the switchover's verification path (free-page map, page digests, compare, the guest's self-check) on a small
/// scratch guest, often enough for the JIT to promote its hot methods. Each process verifies exactly once, inside the
/// downtime, so without this it would run that work as unoptimised first-call code (what that cost is measured in
/// docs/design.md, Switchover). The target calls it before it listens; the source while its guest warms up.
/// </summary>
public static class SwitchoverWarmup
{
    public static void Run(int iterations = 40)
    {
        var config = new GuestConfig
        {
            RamBytes = 16L << 20,
            Vcpus = 1,
            Workload = new WorkloadOptions { Kind = WorkloadKind.Idle },
        };

        // The guest configuration's trip through Begin (serialised by the source, parsed and validated by the target):
        // once per process, and cold it was most of the target's Begin handler.
        var parsed = JsonSerializer.Deserialize(
            JsonSerializer.Serialize(config, WireJson.Default.GuestConfig), WireJson.Default.GuestConfig);
        parsed?.Validate();

        using var vm = VirtualMachine.Boot(config);
        while (!vm.IsWarm)
        {
            vm.Workloads[0].Step(); // fills the scratch guest's page cache: a few hundred pages in use to hash
        }

        for (int i = 0; i < iterations; i++)
        {
            var free = vm.Kernel.FreePageMap();
            ulong[] digests = PageDigests.Compute(vm.Ram, free);
            ulong[] incremental = PageDigests.Compute(vm.Ram, free, new ulong[vm.Ram.PageCount],
                new byte[vm.Ram.PageCount]);
            if (!incremental.AsSpan().SequenceEqual(digests))
            {
                throw new InvalidOperationException("the warm-up guest's digest lists disagree");
            }

            ulong[] received = PageDigests.FromReceived(free, new ulong[vm.Ram.PageCount], new byte[vm.Ram.PageCount]);
            if (received.LongLength != digests.LongLength)
            {
                throw new InvalidOperationException("the warm-up guest's received digest list has the wrong length");
            }

            var (mismatched, _) = PageDigests.Compare(digests, digests, free);
            var check = vm.Kernel.SelfCheck();
            if (mismatched != 0 || !check.Ok)
            {
                throw new InvalidOperationException(
                    $"the warm-up guest does not verify against itself: {mismatched} mismatched, {check}");
            }
        }

        // The target's rebuild, start and stop of a migrated guest, which run inside the downtime, for every workload
        // (each restores its own vCPU state): cold, a process's first restore was a large share of its switchover.
        foreach (var kind in Enum.GetValues<WorkloadKind>())
        {
            var workload = new WorkloadOptions { Kind = kind, AbMib = 2, PageFaultRegionMib = 2 };
            RestoreOnce(config with { Vcpus = 2, Workload = workload });
        }
    }

    private static void RestoreOnce(GuestConfig config)
    {
        using var vm = VirtualMachine.Boot(config);
        var copy = GuestRam.Allocate(vm.Ram.SizeBytes);
        vm.Ram.Pages(0, (int)vm.Ram.PageCount).CopyTo(copy.Pages(0, (int)copy.PageCount));
        using var restored = VirtualMachine.Restore(config, copy, vm.SaveVcpuStates(), vm.SaveDevices());
        restored.Start();
        restored.Pause();
        _ = restored.SaveVcpuStates();
        _ = restored.Kernel.FreePageMap().ToBytes();
    }
}
