using Migration.Shared.Balloon;
using Migration.Shared.Concurrency;
using Migration.Shared.Devices;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;
using Migration.TestSupport;

namespace Migration.Shared.Tests.Balloon;

public sealed class BalloonDriverTests
{
    /// <summary>A guest whose hint device the test drives by hand (no hint thread).</summary>
    private static VirtualMachine Boot(GuestConfig config) =>
        VirtualMachine.Boot(config, null, GuestSeams.Production with { DeviceThreads = NoDeviceThreads.Instance });

    private static (VirtualMachine Vm, MigrationBitmap Bitmap) Migrating(bool waitOnAck, byte? poison = 0xAA)
    {
        var vm = Boot(new GuestConfig { RamBytes = 32L << 20, Vcpus = 1, PoisonValue = poison, WaitOnAck = waitOnAck });
        var bitmap = new MigrationBitmap(vm.DirtyLog);
        bitmap.SetAll();
        vm.DirtyLog.Enable();
        Assert.True(vm.HintDevice.Setup(
            new PrecopySetup(bitmap, new MigrationCapabilities { FreePageHinting = true })));
        vm.HintDevice.AfterSync(vmRunning: true);
        return (vm, bitmap);
    }

    private static void Run(VirtualMachine vm, int steps)
    {
        for (int i = 0; i < steps; i++)
        {
            vm.BalloonDriver.Step();
            vm.HintDevice.ProcessOne();
        }
    }

    [Fact]
    public void NewId_StartThenFourMiBBlocks_AndTheSkippedPagesAreFreeInTheGuestsEyes()
    {
        var (vm, bitmap) = Migrating(waitOnAck: true);
        using var _ = vm;
        Run(vm, 40);

        Assert.True(vm.BalloonDriver.HeldBlocks >= 6, $"held {vm.BalloonDriver.HeldBlocks}");
        var stats = vm.HintDevice.Stats;
        Assert.Equal(vm.BalloonDriver.HeldBlocks, stats.BlocksApplied);
        Assert.Equal(stats.BlocksApplied * vm.BalloonDriver.BlockPages, stats.PagesCleared);
        var free = vm.Kernel.FreePageMap();
        foreach (long head in vm.Kernel.BlocksOwnedBy(PageOwner.Balloon))
        {
            // not sent, not checked
            Assert.Equal(vm.BalloonDriver.BlockPages, free.CountRange(head, vm.BalloonDriver.BlockPages));
            Assert.Equal(0, bitmap.Pages.CountRange(head, vm.BalloonDriver.BlockPages));
        }
    }

    [Fact]
    public void OneSlotStaysFreeForStop()
    {
        using var vm = Boot(new GuestConfig { RamBytes = 32L << 20, Vcpus = 1 });
        var device = new FreePageHintDevice(vm.Ram.PageCount, queueCapacity: 4, SchedulingPoints.None,
            StandardHintDefences.Instance, NoDeviceThreads.Instance);
        vm.DirtyLog.Enable();
        Assert.True(device.Setup(new PrecopySetup(new MigrationBitmap(vm.DirtyLog),
            new MigrationCapabilities { FreePageHinting = true })));
        device.AfterSync(vmRunning: true);
        var driver = new BalloonDriver(vm.Kernel, device, waitOnAck: true);
        for (int i = 0; i < 20; i++)
        {
            driver.Step(); // the device never processes: the queue fills up to the reserved slot
        }

        Assert.Equal(1, device.FreeSlots);
        Assert.Equal(2, driver.HeldBlocks); // START + 2 blocks, one slot left for STOP
        device.BeforeSync(vmRunning: true);
        driver.Step();
        Assert.Equal(0, device.FreeSlots); // the STOP went into the reserved slot
        Assert.Equal(0, device.Stats.DeviceErrors);
    }

    [Fact]
    public void WithWaitOnAck_TheShrinkerOnlyGivesBackBlocksTheDeviceHasUsed_H8()
    {
        var (vm, _) = Migrating(waitOnAck: true);
        using var _ = vm;
        vm.BalloonDriver.Step(); // START
        vm.BalloonDriver.Step(); // one block queued, not yet used by the device
        Assert.Equal(1, vm.BalloonDriver.HeldBlocks);
        Assert.False(vm.Kernel.Shrinker!(0));
        Assert.Equal(1, vm.BalloonDriver.HeldBlocks);

        while (vm.HintDevice.ProcessOne())
        {
            // the device uses the buffers
        }

        Assert.True(vm.Kernel.Shrinker!(0));
        Assert.Equal(1, vm.BalloonDriver.ShrunkBlocks);
    }

    [Fact]
    public void WithoutWaitOnAck_TheShrinkerGivesBackAnyBlock()
    {
        var (vm, _) = Migrating(waitOnAck: false);
        using var _ = vm;
        vm.BalloonDriver.Step();
        vm.BalloonDriver.Step();
        Assert.True(vm.Kernel.Shrinker!(0));
    }

    [Fact]
    public void Done_ReleasesEveryHeldBlock_Poisoned_R12()
    {
        var (vm, _) = Migrating(waitOnAck: true);
        using var _ = vm;
        Run(vm, 20);
        long held = vm.BalloonDriver.HeldBlocks;
        Assert.True(held > 0);
        // As on a target: the hinted blocks were never sent, so they hold zeros until the driver gives them back.
        foreach (long head in vm.Kernel.BlocksOwnedBy(PageOwner.Balloon))
        {
            vm.Ram.Pages(head, (int)vm.BalloonDriver.BlockPages).Clear();
        }

        vm.HintDevice.Cleanup(MigrationStatus.Completed);
        Run(vm, (int)held + 2);

        Assert.Equal(0, vm.BalloonDriver.HeldBlocks);
        var check = vm.Kernel.SelfCheck();
        Assert.True(check.Ok, check.ToString());
    }

    [Fact]
    public void ARestoredGuest_FindsItsHeldBlocksInItsDescriptors()
    {
        var (vm, _) = Migrating(waitOnAck: true);
        using var _ = vm;
        Run(vm, 20);
        var again = new BalloonDriver(vm.Kernel, new FreePageHintDevice(vm.Ram.PageCount), waitOnAck: true);
        Assert.Equal(vm.BalloonDriver.HeldBlocks, again.HeldBlocks);
    }
}
