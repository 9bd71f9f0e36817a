using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.TestSupport;

namespace Migration.Shared.Tests.Guest.Workloads;

public class WorkloadTests
{
    private static GuestConfig Config(WorkloadKind kind, long ramMiB = 32, int vcpus = 2, byte? poison = null,
        ulong seed = 7) => new()
        {
            RamBytes = ramMiB << 20,
            Vcpus = vcpus,
            PoisonValue = poison,
            Workload = new WorkloadOptions
            {
                Kind = kind,
                Seed = seed,
                AbMib = 4,
                PageFaultRegionMib = 4,
                PageFaultOrder = 5,
            },
        };

    /// <summary>Round-robin over the vCPUs, like a fair scheduler, for a fixed number of steps.</summary>
    private static void RunSteps(VirtualMachine vm, int steps)
    {
        for (int i = 0; i < steps; i++)
        {
            vm.Workloads[i % vm.Config.Vcpus].Step();
        }
    }

    private static void Warm(VirtualMachine vm, int maxSteps = 200_000)
    {
        int i = 0;
        while (!vm.IsWarm)
        {
            Assert.True(i++ < maxSteps, "workload did not finish warming up");
            vm.Workloads[i % vm.Config.Vcpus].Step();
        }
    }

    [Theory]
    [InlineData(WorkloadKind.Idle, null)]
    [InlineData(WorkloadKind.Memhog, null)]
    [InlineData(WorkloadKind.Busy, null)]
    [InlineData(WorkloadKind.Churn, null)]
    [InlineData(WorkloadKind.Ab, null)]
    [InlineData(WorkloadKind.PageFault, null)]
    [InlineData(WorkloadKind.Churn, (byte)0x5A)]
    [InlineData(WorkloadKind.Memhog, (byte)0x5A)]
    public void EveryWorkload_LeavesAGuestThatPassesItsSelfCheck(WorkloadKind kind, byte? poison)
    {
        var clock = new ManualTimeProvider();
        using var vm = VirtualMachine.Boot(Config(kind, poison: poison), clock);
        for (int round = 0; round < 20; round++)
        {
            RunSteps(vm, 2000);
            clock.Advance(TimeSpan.FromMilliseconds(50));
        }

        var check = vm.Kernel.SelfCheck();
        Assert.True(check.Ok, $"{kind}: {check}");
        Assert.True(vm.PageWrites > 0);
        Assert.Empty(vm.Kernel.PoisonViolations);
    }

    [Fact]
    public void Idle_UsesAboutFivePercentOfRam()
    {
        using var vm = VirtualMachine.Boot(Config(WorkloadKind.Idle, ramMiB: 64), new ManualTimeProvider());
        Warm(vm);
        double used = 1.0 - ((double)vm.Kernel.FreePages / vm.Ram.PageCount);
        Assert.InRange(used, 0.04, 0.07);
    }

    [Fact]
    public void Memhog_LeavesStaleDataInFreePages()
    {
        using var vm = VirtualMachine.Boot(Config(WorkloadKind.Memhog, ramMiB: 64), new ManualTimeProvider());
        Warm(vm);
        Assert.True(vm.Kernel.FreePages > vm.Ram.PageCount * 0.85, "the hog's memory went back");

        long staleFreePages = 0;
        for (long p = 0; p < vm.Ram.PageCount; p++)
        {
            var d = vm.Kernel.ReadDescriptor(p);
            if (d.State == PageState.FreeHead)
            {
                for (long q = p; q < p + (1L << d.Order); q++)
                {
                    if (vm.Ram.Page(q).IndexOfAnyExcept((byte)0) >= 0)
                    {
                        staleFreePages++;
                    }
                }
            }
        }

        Assert.True(staleFreePages > vm.Ram.PageCount * 0.8, $"only {staleFreePages} free pages hold stale data");
    }

    [Fact]
    public void Busy_WritesAtTheConfiguredRate()
    {
        var clock = new ManualTimeProvider();
        var config = Config(WorkloadKind.Busy, ramMiB: 64) with
        {
            Workload = new WorkloadOptions
            {
                Kind = WorkloadKind.Busy,
                BusyDirtyPagesPerSecond = 5000,
                BusyExitChance = 0,
            },
        };
        using var vm = VirtualMachine.Boot(config, clock);
        Warm(vm);
        long before = vm.PageWrites;

        // One simulated second in 1 ms ticks; each tick the vCPUs run until the pacer says wait.
        for (int ms = 0; ms < 1000; ms++)
        {
            clock.Advance(TimeSpan.FromMilliseconds(1));
            for (int v = 0; v < vm.Config.Vcpus; v++)
            {
                while (vm.Workloads[v].Step() == StepResult.Progress)
                {
                }
            }
        }

        long written = vm.PageWrites - before;
        Assert.InRange(written, 4750, 5250);
    }

    [Fact]
    public void Busy_DirtyLogSeesTheHotSetRewrittenLessThanItIsWritten()
    {
        var clock = new ManualTimeProvider();
        using var vm = VirtualMachine.Boot(Config(WorkloadKind.Busy, ramMiB: 64), clock);
        Warm(vm);
        vm.DirtyLog.Enable();
        long writesBefore = vm.PageWrites;
        for (int ms = 0; ms < 200; ms++)
        {
            clock.Advance(TimeSpan.FromMilliseconds(1));
            RunSteps(vm, 200);
        }

        long writes = vm.PageWrites - writesBefore;
        long logged = vm.DirtyLog.PagesLogged;
        Assert.True(logged > 0 && logged < writes, $"{logged} pages logged for {writes} page writes");
    }

    [Fact]
    public void Ab_IncrementsByteZeroInAscendingOrder()
    {
        using var vm = VirtualMachine.Boot(Config(WorkloadKind.Ab, vcpus: 1), new ManualTimeProvider());
        var o = vm.Config.Workload;
        Assert.Equal(256, WorkloadOptions.AbFirstPfn);
        long pages = o.AbPages;
        RunSteps(vm, (int)((pages * 2) + (pages / 3)));

        Assert.Null(AbWorkload.Verify(vm.Ram, WorkloadOptions.AbFirstPfn, pages));
        Assert.Equal(3, vm.Ram.Page(WorkloadOptions.AbFirstPfn)[0]);
        Assert.Equal(3, vm.Ram.Page(WorkloadOptions.AbFirstPfn + (pages / 3) - 1)[0]);
        Assert.Equal(2, vm.Ram.Page(WorkloadOptions.AbFirstPfn + (pages / 3))[0]);
        Assert.Equal(PageState.Reserved, vm.Kernel.ReadDescriptor(WorkloadOptions.AbFirstPfn).State);
    }

    [Fact]
    public void AbVerify_RejectsASecondDropOrAJump()
    {
        using var ram = GuestRam.Allocate(8L << 20);
        for (long p = 256; p < 512; p++)
        {
            ram.Page(p)[0] = 5;
        }

        Assert.Null(AbWorkload.Verify(ram, 256, 256));
        for (long p = 300; p < 512; p++)
        {
            ram.Page(p)[0] = 4; // the loop had reached page 300: one drop by one, then the older value continues
        }

        Assert.Null(AbWorkload.Verify(ram, 256, 256));

        ram.Page(400)[0] = 3;
        Assert.Contains("page 400", AbWorkload.Verify(ram, 256, 256));

        ram.Page(400)[0] = 4;
        ram.Page(401)[0] = 9;
        Assert.Contains("page 401", AbWorkload.Verify(ram, 256, 256));
    }

    [Fact]
    public void SameSeed_SameSchedule_SameRam()
    {
        UInt128 Run(ulong seed)
        {
            using var vm = VirtualMachine.Boot(Config(WorkloadKind.Churn, seed: seed), new ManualTimeProvider());
            RunSteps(vm, 5000);
            return Hashing.Of(vm.Ram);
        }

        Assert.Equal(Run(11), Run(11));
        Assert.NotEqual(Run(11), Run(12));
    }

    [Theory]
    [InlineData(WorkloadKind.Busy)]
    [InlineData(WorkloadKind.Memhog)]
    [InlineData(WorkloadKind.Churn)]
    [InlineData(WorkloadKind.Ab)]
    [InlineData(WorkloadKind.PageFault)]
    public void VcpuState_RestoredOnACopyOfRam_ContinuesExactlyLikeTheOriginal(WorkloadKind kind)
    {
        var clock = new ManualTimeProvider();
        var config = Config(kind);
        using var source = VirtualMachine.Boot(config, clock);
        RunSteps(source, 3000);
        clock.Advance(TimeSpan.FromMilliseconds(100));
        var states = source.SaveVcpuStates();
        Assert.All(states, s => Assert.True(s.Length < 128, $"vCPU state is {s.Length} bytes"));

        var copy = GuestRam.Allocate(config.RamBytes);
        source.Ram.Pages(0, (int)source.Ram.PageCount).CopyTo(copy.Pages(0, (int)copy.PageCount));
        using var target = VirtualMachine.Restore(config, copy, states, clock);

        RunSteps(source, 3000);
        RunSteps(target, 3000);
        Assert.Equal(Hashing.Of(source.Ram), Hashing.Of(target.Ram));
        Assert.True(target.Kernel.SelfCheck().Ok);
    }

    [Fact]
    public void PageFault_MapsItsRegionInFull_ThenUnmapsAllOfIt()
    {
        using var vm = VirtualMachine.Boot(Config(WorkloadKind.PageFault, vcpus: 1), new ManualTimeProvider());
        var workload = vm.Workloads[0];
        long free = vm.Kernel.FreePages;
        const int Blocks = 4 * 256 / 32; // 4 MiB in blocks of order 5
        workload.Step(); // the region's table (one page) and the first fault
        long table = free - vm.Kernel.FreePages - 32;
        Assert.Equal(1, table);

        for (int loop = 1; loop <= 3; loop++)
        {
            while (workload.PageWrites < loop * Blocks * 32L)
            {
                workload.Step();
            }

            Assert.Equal(free - table - (Blocks * 32L), vm.Kernel.FreePages); // mapped in full
            for (int i = 0; i < Blocks; i++)
            {
                workload.Step();
            }

            Assert.Equal(free - table, vm.Kernel.FreePages); // unmapped in full
        }

        Assert.True(vm.Kernel.SelfCheck().Ok);
    }

    [Fact]
    public void Restore_RejectsStateOfAnotherWorkload()
    {
        var config = Config(WorkloadKind.Churn);
        using var source = VirtualMachine.Boot(config, new ManualTimeProvider());
        var states = source.SaveVcpuStates();
        var copy = GuestRam.Allocate(config.RamBytes);
        source.Ram.Pages(0, (int)source.Ram.PageCount).CopyTo(copy.Pages(0, (int)copy.PageCount));
        try
        {
            var ex = Assert.Throws<InvalidDataException>(
                () => VirtualMachine.Restore(Config(WorkloadKind.Busy), copy, states));
            Assert.Contains("Churn", ex.Message);
        }
        finally
        {
            copy.Dispose();
        }
    }

    [Fact]
    public void Options_RejectOutOfRangeValues()
    {
        Assert.Contains("MemhogShare", Assert.ThrowsAny<ArgumentException>(
            () => new WorkloadOptions { MemhogShare = 1.5 }.Validate(64L << 20)).Message);
        Assert.Contains("ab range", Assert.ThrowsAny<ArgumentException>(
            () => new WorkloadOptions { Kind = WorkloadKind.Ab, AbMib = 64 }.Validate(64L << 20)).Message);
        Assert.Contains("vCPUs",
            Assert.ThrowsAny<ArgumentException>(() => new GuestConfig { Vcpus = 0 }.Validate()).Message);
    }
}
