using Microsoft.Extensions.Time.Testing;
using Migration.Shared.Balloon;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Machine;
using Migration.TestSupport;

using static Migration.Shared.Tests.Balloon.BalloonSteps;

namespace Migration.Shared.Tests.Balloon;

/// <summary>
/// The statistics queue: its 10-byte entries, the single-buffer protocol (the device keeps the guest's buffer as its
/// next request), numbers from the in-RAM kernel's counters, polling, and the buffer's recovery after a migration
/// (rule R19), which fails without the defence.
/// </summary>
public sealed class BalloonStatsTests
{
    private const long RamBytes = 32L << 20;

    [Fact]
    public void Entries_RoundTrip_UnknownTagsAreIgnored_AndWhatIsMissingIsMinusOne()
    {
        var buffer = BalloonStats.Encode([(4, 123456), (65535, 9), (10, 2)]);
        Assert.Equal(30, buffer.Length);
        var values = BalloonStats.Decode(buffer, out string? problem);
        Assert.Null(problem);
        Assert.Equal(123456, values![(int)BalloonStatTag.FreeMemory]);
        Assert.Equal(2, values[(int)BalloonStatTag.OomKills]);
        Assert.Equal(14, values.Count(v => v == -1));
    }

    [Theory]
    [InlineData(9)]
    [InlineData(11)]
    [InlineData(BalloonStats.MaxBytes + BalloonStats.EntryBytes)]
    public void ABufferThatIsNoWholeNumberOfEntries_OrTooLong_IsRefused(int length)
    {
        Assert.Null(BalloonStats.Decode(new byte[length], out string? problem));
        Assert.Contains("10-byte entries", problem, StringComparison.Ordinal);
    }

    [Fact]
    public void TheDeviceHoldsTheBuffer_UntilItAsks_AndASecondOneIsADeviceError()
    {
        using var guest = new TestGuest(RamBytes);
        var device = new BalloonDevice(guest.Ram, BalloonFeatureBits.StatsQueue);
        long first = device.Kick(BalloonVq.Stats, BalloonStats.Encode([(5, 4096)]));
        Assert.True(device.ProcessOne());
        Assert.False(device.IsUsed(first)); // held: the next request token
        Assert.Equal(4096, device.GuestStats[BalloonStatTag.TotalMemory]);
        Assert.True(device.GuestStats.LastUpdate > 0);

        Assert.True(device.RequestStats());
        Assert.True(device.IsUsed(first));
        Assert.False(device.RequestStats()); // nothing held until the guest answers

        long second = device.Kick(BalloonVq.Stats, BalloonStats.Encode([(5, 8192)]));
        long third = device.Kick(BalloonVq.Stats, BalloonStats.Encode([(5, 1)]));
        device.Drain();
        Assert.True(device.IsUsed(second)); // given back when the third broke the one-outstanding rule
        Assert.False(device.IsUsed(third));
        Assert.Equal(1, device.Stats.DeviceErrors);

        device.Kick(BalloonVq.Stats, new byte[7]); // malformed: an error, given back, the numbers stay
        device.Drain();
        Assert.Equal((2L, 1L), (device.Stats.DeviceErrors, device.GuestStats[BalloonStatTag.TotalMemory]));
    }

    [Fact]
    public void TheDriversNumbers_AreTheKernelsCounters_AndFollowTheGuest()
    {
        var clock = new FakeTimeProvider();
        using var vm = Boot(clock);
        Settle(vm);
        var kernel = vm.Kernel.Counters();
        var stats = vm.Balloon.GuestStats;
        Assert.Equal((kernel.FreePages + kernel.HintHeldPages) * 4096, stats[BalloonStatTag.FreeMemory]);
        Assert.Equal(kernel.ManagedPages * 4096, stats[BalloonStatTag.TotalMemory]);
        Assert.Equal(0, stats[BalloonStatTag.SwapIn]);
        Assert.DoesNotContain(-1L, stats.Values); // all sixteen tags, every time

        for (int i = 0; i < 64; i++)
        {
            vm.Kernel.Allocate(0, PageOwner.Anonymous);
        }

        Assert.True(vm.Balloon.RequestStats());
        Settle(vm);
        var later = vm.Balloon.GuestStats;
        Assert.Equal(stats.Reports + 1, later.Reports);
        Assert.Equal(stats[BalloonStatTag.FreeMemory] - (64 * 4096), later[BalloonStatTag.FreeMemory]);
        Assert.Equal(stats[BalloonStatTag.MinorFaults] + 64, later[BalloonStatTag.MinorFaults]);
    }

    [Fact]
    public void Polling_AsksEveryInterval()
    {
        var clock = new FakeTimeProvider();
        using var vm = Boot(clock);
        Settle(vm);
        vm.Balloon.SetStatsPolling(2);
        for (int i = 0; i < 3; i++)
        {
            clock.Advance(TimeSpan.FromSeconds(2));
            Settle(vm);
        }

        Assert.Equal((4L, 2), (vm.Balloon.GuestStats.Reports, vm.Balloon.GuestStats.PollingIntervalSeconds));
        vm.Balloon.SetStatsPolling(0);
        clock.Advance(TimeSpan.FromSeconds(10));
        Settle(vm);
        Assert.Equal(4, vm.Balloon.GuestStats.Reports);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AfterAMigration_StatsKeepFlowing_OnlyWithTheBufferQueuedAgain_S1(bool defence)
    {
        var config = new GuestConfig { RamBytes = RamBytes, Vcpus = 1, Balloon = new BalloonOptions() };
        var clock = new FakeTimeProvider();
        using var vm = Boot(clock);
        vm.Balloon.SetStatsPolling(5);
        Settle(vm);
        Assert.True(vm.Balloon.HoldsStatsBuffer); // the source device held the guest's buffer at the switchover
        var state = vm.SaveDeviceState();
        Assert.Equal(5, state.StatsPollingSeconds);

        var seams = Seams with
        {
            BalloonDefences = defence ? StandardBalloonDefences.Instance : new LosesTheStatsBuffer(),
        };
        using var target = VirtualMachine.Restore(config, Copy(vm.Ram), vm.SaveVcpuStates(), clock, state, seams);
        Settle(target);
        Assert.Equal(5, target.Balloon.GuestStats.PollingIntervalSeconds);
        clock.Advance(TimeSpan.FromSeconds(5));
        Settle(target);
        clock.Advance(TimeSpan.FromSeconds(5));
        Settle(target);

        // With R19 the guest's re-queued buffer answers at once and every poll after; without it the guest waits
        // forever for an answer to a buffer this device never saw.
        Assert.Equal(defence ? 3 : 0, target.Balloon.GuestStats.Reports);
    }

    private static GuestSeams Seams => GuestSeams.Production with { DeviceThreads = NoDeviceThreads.Instance };

    private static VirtualMachine Boot(TimeProvider time) =>
        VirtualMachine.Boot(new GuestConfig { RamBytes = RamBytes, Vcpus = 1, Balloon = new BalloonOptions() }, time,
            Seams);

    /// <summary>The mutant of R19: a restored driver forgets the stats buffer it had queued on the source.</summary>
    private sealed class LosesTheStatsBuffer() : ForwardingBalloonDefences(StandardBalloonDefences.Instance)
    {
        public override bool RequeueStatsOnRestore => false;
    }
}
