using Migration.Shared.Balloon;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Machine;
using Migration.TestSupport;

using static Migration.Shared.Tests.Balloon.BalloonSteps;

namespace Migration.Shared.Tests.Balloon;

/// <summary>The guest's inflate/deflate driver against the device, both stepped by hand.</summary>
public sealed class BalloonInflateDriverTests
{
    private const long RamBytes = 32L << 20;

    private static VirtualMachine Boot(BalloonOptions options, TimeProvider? time = null) =>
        VirtualMachine.Boot(new GuestConfig { RamBytes = RamBytes, Vcpus = 1, Balloon = options }, time,
            GuestSeams.Production with { DeviceThreads = NoDeviceThreads.Instance });

    private static long BalloonPagesInDescriptors(VirtualMachine vm) =>
        vm.Kernel.BlocksWithOrderOwnedBy(PageOwner.BalloonInflated).Sum(b => 1L << b.Order);

    [Theory]
    [InlineData(BalloonEncoding.PageNumbers, 16)]
    [InlineData(BalloonEncoding.Bitmap, 1)]
    [InlineData(BalloonEncoding.Chunks, 1)]
    public void InflatesAndDeflatesToTheTarget(BalloonEncoding encoding, long inflateRequests)
    {
        using var vm = Boot(new BalloonOptions { Encoding = encoding });
        long free = vm.Kernel.FreePages;
        vm.Balloon.SetTargetPages(4096);
        Settle(vm);

        Assert.Equal((4096L, 4096L, 4096L), (vm.InflateDriver.ActualPages, vm.Balloon.ActualPages,
            vm.Balloon.HeldPages));
        Assert.Equal(4096, BalloonPagesInDescriptors(vm));
        Assert.Equal(free - 4096, vm.Kernel.FreePages);
        Assert.Equal(inflateRequests, vm.Balloon.Stats.InflateRequests);
        var held = vm.Balloon.HeldRanges();
        foreach (var (pfn, order) in vm.Kernel.BlocksWithOrderOwnedBy(PageOwner.BalloonInflated))
        {
            Assert.Contains(held, r => r.First <= pfn && pfn + (1L << order) <= r.End);
        }

        vm.Balloon.SetTargetPages(1000); // not a power of two: the driver splits a block
        Settle(vm);
        Assert.Equal((1000L, 1000L, 1000L), (vm.InflateDriver.ActualPages, vm.Balloon.ActualPages,
            vm.Balloon.HeldPages));
        Assert.Equal(1000, BalloonPagesInDescriptors(vm));

        vm.Balloon.SetTargetPages(0);
        Settle(vm);
        Assert.Equal((0L, 0L), (vm.Balloon.ActualPages, vm.Balloon.HeldPages));
        Assert.Equal(free, vm.Kernel.FreePages);
        Assert.Equal(0, vm.Balloon.Stats.DeviceErrors);
        Assert.True(vm.Kernel.SelfCheck().Ok);
    }

    [Fact]
    public void PagesOfAnUnacknowledgedInflate_StayTheBalloons_EvenWhenTheTargetFalls()
    {
        using var vm = Boot(new BalloonOptions());
        vm.Balloon.SetTargetPages(256);
        vm.InflateDriver.Step(); // one request queued, not used
        long free = vm.Kernel.FreePages;
        vm.Balloon.SetTargetPages(0);
        for (int i = 0; i < 3; i++)
        {
            vm.InflateDriver.Step();
        }

        Assert.Equal(free, vm.Kernel.FreePages); // nothing freed while the device may still discard it
        Assert.Equal(0, vm.InflateDriver.ActualPages); // and nothing counted before the acknowledgement
        Assert.Equal(256, BalloonPagesInDescriptors(vm));
        Settle(vm);
        Assert.Equal((0L, 0L, 0L), (vm.Balloon.ActualPages, vm.Balloon.HeldPages, BalloonPagesInDescriptors(vm)));
        Assert.Equal(0, vm.Balloon.Stats.DeviceErrors);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Deflate_ReusesPagesAfterTheAcknowledgementOnlyWithMustTellHost(bool mustTellHost)
    {
        using var vm = Boot(new BalloonOptions { MustTellHost = mustTellHost });
        vm.Balloon.SetTargetPages(256);
        Settle(vm);
        long free = vm.Kernel.FreePages;
        vm.Balloon.SetTargetPages(0);
        vm.InflateDriver.Step(); // the deflate is queued

        Assert.Equal(mustTellHost ? free : free + 256, vm.Kernel.FreePages);
        Settle(vm);
        Assert.Equal(free + 256, vm.Kernel.FreePages);
        Assert.Equal(0, vm.Balloon.HeldPages);
    }

    [Fact]
    public void OutOfPuff_RetriesAfter200ms()
    {
        var time = new ManualTimeProvider();
        using var vm = Boot(new BalloonOptions { Events = false }, time);
        vm.Balloon.SetTargetPages(vm.Ram.PageCount); // more than is free
        Settle(vm);
        long inflated = vm.Balloon.ActualPages;
        Assert.True(inflated > vm.Ram.PageCount / 2, $"inflated {inflated}");
        Assert.Equal(1, vm.InflateDriver.PuffFailures);

        time.Advance(TimeSpan.FromMilliseconds(150));
        Settle(vm);
        Assert.Equal(1, vm.InflateDriver.PuffFailures);
        time.Advance(TimeSpan.FromMilliseconds(60));
        Settle(vm);
        Assert.Equal(2, vm.InflateDriver.PuffFailures);
        Assert.Equal(inflated, vm.Balloon.ActualPages);
        Assert.Equal(vm.Ram.PageCount, vm.Balloon.TargetPages); // without events the host does not know
    }

    [Fact]
    public void OutOfPuff_WithEvents_TellsTheHost_WhichStopsInflating()
    {
        using var vm = Boot(new BalloonOptions());
        var kinds = new List<BalloonNotificationKind>();
        vm.Balloon.Notified += n => kinds.Add(n.Kind);
        vm.Balloon.SetTargetPages(vm.Ram.PageCount);
        Settle(vm);

        Assert.Contains(BalloonNotificationKind.PuffFailure, kinds);
        Assert.Equal(vm.Balloon.ActualPages, vm.Balloon.TargetPages);
        Assert.Equal(1, vm.Balloon.Stats.GuestEvents);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void DeflateOnOom_GivesOneMiBBackPerFailure_AndNeverReinflatesByItself(bool deflateOnOom)
    {
        using var vm = Boot(new BalloonOptions { DeflateOnOom = deflateOnOom, Events = false });
        vm.Balloon.SetTargetPages(vm.Ram.PageCount);
        Settle(vm);
        long actual = vm.Balloon.ActualPages;
        Assert.Equal(0, vm.Kernel.FreePages);

        long pfn = vm.Kernel.TryAllocate(0, PageOwner.Anonymous);
        Settle(vm);
        if (!deflateOnOom)
        {
            Assert.Equal(-1, pfn);
            Assert.Equal(actual, vm.Balloon.ActualPages);
            return;
        }

        Assert.True(pfn >= 0);
        Assert.Equal(BalloonInflateDriver.OomDeflatePages, vm.InflateDriver.OomDeflatedPages);
        Assert.Equal(actual - 256, vm.Balloon.ActualPages);
        Assert.Equal(actual - 256, vm.Balloon.HeldPages);
        Assert.Equal(255, vm.Kernel.FreePages); // not taken again: the target did not change

        vm.Balloon.SetTargetPages(actual); // a new target from the host does restart the work
        Settle(vm);
        Assert.Equal(actual - 1, vm.Balloon.ActualPages);
    }

    [Fact]
    public void CriticalPressure_ReachesTheHost_AsAnEvent()
    {
        using var vm = Boot(new BalloonOptions());
        var levels = new List<MemoryPressure>();
        vm.Balloon.Notified += n =>
        {
            if (n.Kind == BalloonNotificationKind.Pressure)
            {
                levels.Add(n.Level);
            }
        };
        vm.Balloon.SetTargetPages(vm.Ram.PageCount - 64);
        Settle(vm);
        while (vm.Kernel.TryAllocate(0, PageOwner.Anonymous) >= 0 && vm.InflateDriver.OomDeflatedPages == 0)
        {
        }

        Settle(vm);
        Assert.Contains(MemoryPressure.Critical, levels);
        Assert.Equal(vm.Balloon.ActualPages, vm.Balloon.TargetPages);
    }

    [Fact]
    public void DeviceState_RoundTrips_AndTheTargetRefusesHeldPagesTheGuestOwns()
    {
        var config = new GuestConfig { RamBytes = RamBytes, Vcpus = 1, Balloon = new BalloonOptions() };
        using var vm = Boot(config.Balloon);
        vm.Balloon.SetTargetPages(3000);
        Settle(vm);
        var state = vm.SaveDeviceState();
        Assert.Equal((3000L, 3000L), (state.TargetPages, state.ActualPages));
        Assert.Equal(3000, state.Held.Sum(r => r.Count));
        var bytes = BalloonState.HeldToBytes(state.Held);
        Assert.Equal(state.Held, BalloonState.HeldFromBytes(bytes, vm.Ram.PageCount));
        Assert.Throws<InvalidDataException>(() => BalloonState.HeldFromBytes(bytes.AsSpan(1), vm.Ram.PageCount));
        Assert.Throws<InvalidDataException>(() => BalloonState.HeldFromBytes(bytes, 100));

        var vcpus = vm.SaveVcpuStates();
        using (var restored = VirtualMachine.Restore(config, Copy(vm.Ram), vcpus, null, state))
        {
            Assert.Equal(state.Held, restored.Balloon.HeldRanges());
            Assert.Equal(3000, restored.InflateDriver.ActualPages);
        }

        long owned = vm.Kernel.Allocate(0, PageOwner.Anonymous);
        var rogue = state with { Held = [.. state.Held, new PageRange(owned, 1)] };
        rogue = rogue with { Held = [.. rogue.Held.OrderBy(r => r.First)] };
        var ram = Copy(vm.Ram);
        try
        {
            var error = Assert.Throws<InvalidDataException>(() => VirtualMachine.Restore(config, ram, vcpus, null,
                rogue));
            Assert.Contains($"{owned}", error.Message, StringComparison.Ordinal);
        }
        finally
        {
            ram.Dispose();
        }
    }

    [Fact]
    public void RequestsInFlightAtTheSwitchover_AreSettledOnTheTarget()
    {
        var config = new GuestConfig
        {
            RamBytes = RamBytes,
            Vcpus = 1,
            Balloon = new BalloonOptions { MustTellHost = true, Encoding = BalloonEncoding.Chunks },
        };
        using var vm = Boot(config.Balloon);
        vm.Balloon.SetTargetPages(512);
        Settle(vm);
        vm.Balloon.SetTargetPages(256);
        vm.InflateDriver.Step(); // a MUST_TELL_HOST deflate in flight: its pages are still the balloon's to the guest
        vm.Balloon.Drain(); // B4: the device uses it before the state is saved
        var state = vm.SaveDeviceState();
        Assert.Equal(256, state.Held.Sum(r => r.Count));

        using var restored = VirtualMachine.Restore(config, Copy(vm.Ram), vm.SaveVcpuStates(), null, state);
        Assert.Equal((256L, 256L), (restored.InflateDriver.ActualPages, restored.Balloon.ActualPages));
        Assert.Equal(256, BalloonPagesInDescriptors(restored)); // the deflated half went back to the allocator
        Settle(restored);
        Assert.Equal((0L, 256L), (restored.Balloon.Stats.DeviceErrors, restored.Balloon.HeldPages));

        // an inflate used at the switchover, after the source saved `actual`: it counts on the target
        restored.Balloon.SetTargetPages(1024);
        restored.InflateDriver.Step();
        restored.Balloon.Drain();
        var later = restored.SaveDeviceState();
        Assert.Equal(256, later.ActualPages);
        using var again = VirtualMachine.Restore(config, Copy(restored.Ram), restored.SaveVcpuStates(), null, later);
        Assert.Equal((1024L, 1024L, 1024L), (again.Balloon.ActualPages, again.Balloon.HeldPages,
            again.InflateDriver.ActualPages));
    }
}
