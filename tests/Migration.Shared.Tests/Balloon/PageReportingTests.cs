using Microsoft.Extensions.Time.Testing;
using Migration.Shared.Balloon;
using Migration.Shared.Concurrency;
using Migration.Shared.Devices;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Verification;
using Migration.TestSupport;

using static Migration.Shared.Tests.Balloon.BalloonSteps;

namespace Migration.Shared.Tests.Balloon;

/// <summary>
/// Free page reporting: the allocator's isolate and putback, the driver's paced passes, the device's checks, discards
/// and poison rule, the discard map a migration skips, and the four races of the design (R20-R23), each shown
/// failing without its defence.
/// </summary>
public sealed class PageReportingTests
{
    private const long RamBytes = 32L << 20;
    private const int Order = BalloonOptions.DefaultReportingOrder;

    [Fact]
    public void IsolatedBlocks_ComeBackReportedAtTheTail_AndTheAllocatorTakesUnreportedFirst()
    {
        using var guest = new TestGuest(RamBytes);
        var kernel = guest.Kernel;
        long free = kernel.FreePages;
        var blocks = new List<long>();
        Assert.Equal(4, kernel.IsolateForReporting(GuestKernel.MaxOrder, 4, 0, blocks));
        Assert.Equal(free - (4L << GuestKernel.MaxOrder), kernel.FreePages);
        Assert.All(blocks, b => Assert.True(kernel.IsIsolatedForReporting(b, GuestKernel.MaxOrder)));
        Assert.True(kernel.SelfCheck().Ok, kernel.SelfCheck().ToString());

        foreach (long b in blocks)
        {
            kernel.PutBackReported(b, GuestKernel.MaxOrder, reported: true);
        }

        Assert.Equal((free, 4L << GuestKernel.MaxOrder), (kernel.FreePages, kernel.ReportedPages));
        Assert.True(kernel.SelfCheck().Ok, kernel.SelfCheck().ToString());

        // A second pass finds nothing new at the head of a list whose unreported blocks it took.
        var again = new List<long>();
        kernel.IsolateForReporting(GuestKernel.MaxOrder, 32, 0, again);
        Assert.Empty(again.Intersect(blocks));
        foreach (long b in again)
        {
            kernel.PutBackReported(b, GuestKernel.MaxOrder, reported: true);
        }

        // Every max-order block is reported now; allocating takes one, and it is no longer reported.
        long before = kernel.ReportedPages;
        long pfn = kernel.Allocate(GuestKernel.MaxOrder, PageOwner.Anonymous);
        Assert.Equal(before - (1L << GuestKernel.MaxOrder), kernel.ReportedPages);
        kernel.Free(pfn, GuestKernel.MaxOrder);
        Assert.True(kernel.SelfCheck().Ok, kernel.SelfCheck().ToString());
        var next = new List<long>();
        Assert.Equal(1, kernel.IsolateForReporting(GuestKernel.MaxOrder, 32, 0, next)); // only the freed one is new
        Assert.Equal(pfn, next[0]);
    }

    [Fact]
    public void APutBackThatMergesWithAFreeBuddy_IsANewUnreportedBlock()
    {
        using var guest = new TestGuest(RamBytes);
        var kernel = guest.Kernel;
        long lower = kernel.Allocate(Order + 1, PageOwner.Anonymous);
        long upper = kernel.SplitAllocated(lower, Order + 1);
        kernel.Free(lower, Order);
        var taken = new List<long>();
        Assert.Equal(1, kernel.IsolateForReporting(Order, 1, 0, taken));
        Assert.Equal(lower, taken[0]); // the block just freed is at the head
        kernel.Free(upper, Order); // its buddy is isolated: no merge yet
        kernel.PutBackReported(lower, Order, reported: true);

        var merged = kernel.ReadDescriptor(lower);
        Assert.Equal((PageState.FreeHead, Order + 1), (merged.State, (int)merged.Order));
        Assert.Equal(PageFlags.None, merged.Flags);
        Assert.Equal(0, kernel.ReportedPages);
        Assert.True(kernel.SelfCheck().Ok, kernel.SelfCheck().ToString());
    }

    [Fact]
    public void ThePassWaitsForTheDelay_TakesAboutASixteenthPerPass_AndDiscards()
    {
        // 2 GiB: 512 free blocks of 4 MiB, so Linux's budget (32 blocks per 512) is a sixteenth. Untouched RAM: cheap.
        var clock = new FakeTimeProvider();
        using var vm = VirtualMachine.Boot(Config(new BalloonOptions { Reporting = true }) with { RamBytes = 2L << 30 },
            clock, Seams);
        var driver = vm.ReportingDriver!;
        var scribbled = Scribble(vm, pages: 1024); // stale data in free memory
        Settle(vm);
        Assert.Equal(0, vm.Kernel.ReportedPages); // 2 s have not passed

        clock.Advance(TimeSpan.FromSeconds(2));
        Settle(vm);
        long first = vm.Kernel.ReportedPages;
        Assert.InRange(first, vm.Kernel.FreePages / 32, vm.Kernel.FreePages / 8); // about a sixteenth
        Assert.True(driver.Busy, "a budget that ran out asks for another pass");

        for (int i = 0; i < 40 && driver.Busy; i++)
        {
            clock.Advance(TimeSpan.FromSeconds(2));
            Settle(vm);
        }

        var stats = vm.Balloon.ReportingStats!;
        Assert.Equal(vm.Kernel.ReportedPages, stats.PagesDiscarded);
        long unreported = vm.Kernel.FreePages - vm.Kernel.ReportedPages;
        Assert.True(unreported < driver.WatermarkPages + (1L << GuestKernel.MaxOrder),
            $"{vm.Kernel.FreePages} free, {vm.Kernel.ReportedPages} reported, watermark {driver.WatermarkPages}");
        Assert.Equal(0, stats.PagesKeptPoisoned);
        Assert.True(vm.Kernel.SelfCheck().Ok, vm.Kernel.SelfCheck().ToString());
        var discarded = vm.Balloon.DiscardedRanges();
        var inDiscarded = scribbled.Where(p => discarded.Any(r => r.First <= p && p < r.End)).ToList();
        Assert.True(inDiscarded.Count > scribbled.Count / 2, $"{inDiscarded.Count} of {scribbled.Count} reported");
        Assert.All(inDiscarded, p => Assert.True(vm.Ram.Page(p).IndexOfAnyExcept((byte)0) < 0, $"page {p} is zero"));
        Assert.Equal(0, vm.Balloon.Stats.DeviceErrors);
    }

    [Fact]
    public void AFreeOfAReportableBlock_RequestsAPass()
    {
        var clock = new FakeTimeProvider();
        using var vm = Boot(clock, Fast);
        Settle(vm);
        long passes = vm.ReportingDriver!.Passes;
        long block = vm.Kernel.Allocate(GuestKernel.MaxOrder, PageOwner.Anonymous);
        Assert.False(IsReported(vm, block));
        Settle(vm);
        Assert.Equal(passes, vm.ReportingDriver.Passes); // an allocation requests nothing
        vm.Kernel.Free(block, GuestKernel.MaxOrder);
        Settle(vm);
        Assert.Equal(passes + 1, vm.ReportingDriver.Passes);
        Assert.True(IsReported(vm, block));
    }

    [Fact]
    public void TheDriversThread_SleepsUntilThePassIsDue_NotAMillisecondAtATime()
    {
        using var vm = Boot(TimeProvider.System, Fast with { ReportingDelayMs = 300 });
        var driver = vm.ReportingDriver!;
        // Registration requested a pass, due 300 ms after boot.
        Assert.InRange(driver.IdleFor(), TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(300));
        Thread.Sleep(400);
        Assert.Equal(TimeSpan.FromMilliseconds(1), driver.IdleFor()); // due: no sleeping past it
        Settle(vm);
        Assert.False(driver.Busy);
        // Nothing requested: it may sleep one delay, so a free made meanwhile is still reported on time.
        Assert.Equal(TimeSpan.FromMilliseconds(300), driver.IdleFor());

        // Under a test's clock, time moves only when the test says: the thread polls.
        using var faked = Boot(new FakeTimeProvider(), Fast with { ReportingDelayMs = 300 });
        Assert.Equal(TimeSpan.FromMilliseconds(1), faked.ReportingDriver!.IdleFor());
    }

    /// <summary>Bad reports, given guest RAM's size and the head of a block the guest has allocated.</summary>
    public static TheoryData<string, Func<long, long, byte[]>> BadReports => new()
    {
        { "outside guest RAM", (ram, _) => Entries((ram, Order)) },
        { "not aligned", (_, _) => Raw((4096L * 100, 4096L << Order)) },
        { "order", (_, _) => Entries((512, Order - 1)) },
        { "power-of-two", (_, _) => Raw((0, 4096L * 3)) },
        { "named twice", (_, _) => Entries((2048, Order), (2048, Order)) },
        { "holds 32", (_, _) => Entries([.. Enumerable.Range(0, 33).Select(i => ((long)i << Order, Order))]) },
        { "16 bytes", (_, _) => new byte[17] },
        { "not free in the guest", (_, used) => Entries((used, GuestKernel.MaxOrder)) },
    };

    [Theory]
    [MemberData(nameof(BadReports))]
    public void ABadReport_IsADeviceError_AndDiscardsNothing(string expected, Func<long, long, byte[]> report)
    {
        using var guest = new TestGuest(RamBytes);
        var device = new BalloonDevice(guest.Ram, BalloonFeatureBits.PageReporting);
        device.EnableReporting(Order, 0, guest.Kernel.IsFreeBlock);
        long used = guest.Kernel.Allocate(GuestKernel.MaxOrder, PageOwner.Anonymous);
        guest.Memory.FillPages(1, guest.Ram.PageCount - 1, 0x5a);
        var isolated = new List<long>();
        guest.Kernel.IsolateForReporting(GuestKernel.MaxOrder, 1, 0, isolated); // a good block in the same report
        byte[] bad = report(guest.Ram.PageCount, used);
        byte[] withGood = [.. ReportingWire.Encode(isolated, GuestKernel.MaxOrder), .. bad];
        long seq = device.Kick(BalloonVq.Reporting, bad.Length % 16 == 0 && bad.Length <= 31 * 16 ? withGood : bad);
        device.Drain();

        Assert.True(device.IsUsed(seq), "a refused report is still used, so the driver is not wedged");
        Assert.Equal(1, device.Stats.DeviceErrors);
        Assert.Contains(expected, device.Stats.LastError, StringComparison.Ordinal);
        Assert.Equal(0, device.ReportingStats!.PagesDiscarded);
        Assert.Equal(-1, Enumerable.Range(1, (int)guest.Ram.PageCount - 1)
            .FirstOrDefault(p => guest.Ram.Page(p)[0] != 0x5a, -1));
    }

    [Fact]
    public void WithoutTheFeature_TheReportingQueueDoesNotExist()
    {
        using var guest = new TestGuest(RamBytes);
        var device = new BalloonDevice(guest.Ram, BalloonFeatureBits.StatsQueue);
        Assert.Throws<InvalidOperationException>(() => device.EnableReporting(Order, 0, (_, _) => true));
        Assert.Equal(-1, device.Kick(3, Entries((0, Order)))); // inflate, deflate, stats: there is no index 3
        Assert.Equal(1, device.Stats.DeviceErrors);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void APoisonedGuestsReportedPages_AreKept_R21(bool defence)
    {
        var clock = new FakeTimeProvider();
        using var vm = Boot(clock, Fast, poison: 0xaa,
            defences: defence ? StandardBalloonDefences.Instance : new DiscardsPoisoned());
        Settle(vm);
        var stats = vm.Balloon.ReportingStats!;
        Assert.True(stats.Reports > 0);
        for (int i = 0; i < 16; i++)
        {
            vm.Kernel.TryAllocate(GuestKernel.MaxOrder - 2, PageOwner.Anonymous); // checks the poison of what it gets
        }

        var check = vm.Kernel.SelfCheck();
        if (defence)
        {
            Assert.Equal(0, stats.PagesDiscarded);
            Assert.True(stats.PagesKeptPoisoned > 0);
            Assert.True(check.Ok, check.ToString());
            Assert.Equal(0, vm.Kernel.PoisonViolationCount);
        }
        else
        {
            Assert.True(vm.Kernel.PoisonViolationCount > 0 || !check.Ok, "a discard of 0xaa pages leaves zeros");
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ABlockReusedBeforeTheReportIsUsed_LosesItsWrites_R20(bool defence)
    {
        var clock = new FakeTimeProvider();
        var stamped = new List<(long Pfn, int Order)>();
        VirtualMachine? vmRef = null;
        bool armed = false;
        var points = new SchedulingPoints
        {
            // At the device's point between its checks and its discards, a vCPU allocates what it can and writes it.
            YieldPoint = phase =>
            {
                if (!phase || !armed || vmRef is null)
                {
                    return;
                }

                armed = false;
                long pfn;
                while ((pfn = vmRef.Kernel.TryAllocate(Order, PageOwner.Anonymous, stamp: true)) >= 0)
                {
                    stamped.Add((pfn, Order));
                }
            },
        };
        using var vm = Boot(clock, Fast, defences: defence ? StandardBalloonDefences.Instance : new ReusesEarly(),
            scheduling: points);
        vmRef = vm;
        Assert.Equal(StepResult.Progress, vm.ReportingDriver!.Step()); // isolates and queues the first report
        Assert.Equal(defence, vm.Kernel.IsolatedForReporting().Count > 0);
        armed = true;
        vm.Balloon.ProcessOne();
        Assert.False(armed);
        Assert.NotEmpty(stamped);

        var check = vm.Kernel.SelfCheck();
        if (defence)
        {
            Assert.True(check.Ok, check.ToString());
        }
        else
        {
            Assert.False(check.Ok);
            Assert.Contains("stamp missing", check.Findings[0], StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AMigrationSkipsDiscardedPages_ButNotAReportedBlockWrittenSince_R22(bool defence)
    {
        var clock = new FakeTimeProvider();
        using var vm = Boot(clock, Fast, defences: defence ? StandardBalloonDefences.Instance : new TrustsTheMap());
        Settle(vm);
        long discarded = vm.Balloon.ReportingStats!.PagesDiscarded;
        Assert.True(discarded > 0);

        // The guest takes a reported block back and writes it (no word to the host), then a migration starts.
        var discardedRanges = vm.Balloon.DiscardedRanges();
        long reused;
        do
        {
            reused = vm.Kernel.Allocate(GuestKernel.MaxOrder, PageOwner.Anonymous);
        }
        while (!discardedRanges.Any(r => r.First <= reused && reused < r.End));

        vm.Memory.FillPages(reused, 1L << GuestKernel.MaxOrder, 0x3c);
        var bitmap = new MigrationBitmap(vm.DirtyLog);
        bitmap.SetAll();
        vm.DirtyLog.Enable();
        Assert.True(vm.Balloon.Setup(new PrecopySetup(bitmap, new MigrationCapabilities())));

        long sentOfReused = bitmap.Pages.CountRange(reused, 1L << GuestKernel.MaxOrder);
        var report = new Reporting.MigrationReport();
        vm.Balloon.Report(report);
        Assert.True(report.Transfer.PagesSkippedAsDiscarded > 0);
        Assert.Equal(defence ? 1L << GuestKernel.MaxOrder : 0, sentOfReused);
        Assert.True(report.Transfer.PagesSkippedAsDiscarded <= discarded - (defence ? 1L << GuestKernel.MaxOrder : 0));
    }

    [Fact]
    public void SkipDiscardedOff_LeavesTheBitmapWhole()
    {
        var clock = new FakeTimeProvider();
        using var vm = Boot(clock, Fast);
        Settle(vm);
        var bitmap = new MigrationBitmap(vm.DirtyLog);
        bitmap.SetAll();
        vm.DirtyLog.Enable();
        vm.Balloon.Setup(new PrecopySetup(bitmap, new MigrationCapabilities { SkipDiscarded = false }));
        Assert.Equal(vm.Ram.PageCount, bitmap.Pages.Count);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ADiscardDuringAMigration_IsLoggedAsAWriteOfZeros_R23(bool defence)
    {
        var clock = new FakeTimeProvider();
        using var vm = Boot(clock, Fast with { ReportingDelayMs = 1000 },
            defences: defence ? StandardBalloonDefences.Instance : new DiscardsUnlogged());
        clock.Advance(TimeSpan.FromSeconds(1));
        Settle(vm);
        long block = vm.Kernel.Allocate(GuestKernel.MaxOrder, PageOwner.Anonymous);
        long pages = 1L << GuestKernel.MaxOrder;
        vm.Memory.FillPages(block, pages, 0x5a);

        // A migration sends everything once: the target holds the block's data.
        var bitmap = new MigrationBitmap(vm.DirtyLog);
        bitmap.SetAll();
        vm.DirtyLog.Enable();
        Assert.True(vm.Balloon.Setup(new PrecopySetup(bitmap, new MigrationCapabilities())));
        using (bitmap.Lock())
        {
            bitmap.Pages.ClearRange(0, vm.Ram.PageCount);
        }

        // The guest frees the block, the driver reports it, the host discards it: zeros here, 0x5a on the target.
        vm.Kernel.Free(block, GuestKernel.MaxOrder);
        clock.Advance(TimeSpan.FromSeconds(1));
        Settle(vm);
        Assert.Contains(vm.Balloon.DiscardedRanges(), r => r.First <= block && block < r.End);
        Assert.True(vm.Ram.Page(block + 1).IndexOfAnyExcept((byte)0) < 0);

        // A later allocation that writes only its first page would read the old data on the target, unless the
        // discard itself went into the log and every page of the block is sent again (as zero).
        bitmap.SyncFromLog();
        long toSend = bitmap.Pages.CountRange(block, pages);
        var report = new Reporting.MigrationReport();
        vm.Balloon.Report(report);
        Assert.True(report.Reporting!.PagesDiscardedDuringMigration >= pages);
        if (defence)
        {
            Assert.Equal(pages, toSend);
        }
        else
        {
            Assert.True(toSend < pages, $"{toSend} of {pages} pages logged without the defence");
        }
    }

    [Fact]
    public void ARestoredGuest_ReturnsTheBlocksOfAReportInFlight_AndTheDiscardMapTravels()
    {
        var clock = new FakeTimeProvider();
        var config = Config(Fast);
        using var vm = VirtualMachine.Boot(config, clock, Seams);
        Settle(vm);
        vm.Kernel.Free(vm.Kernel.Allocate(GuestKernel.MaxOrder, PageOwner.Anonymous), GuestKernel.MaxOrder);
        for (int i = 0; i < 3; i++)
        {
            vm.ReportingDriver!.Step(); // a pass that isolated a block and queued it, not yet used
        }

        Assert.NotEmpty(vm.Kernel.IsolatedForReporting());
        var state = vm.SaveDeviceState();
        Assert.NotEmpty(state.Discarded);
        using var target = VirtualMachine.Restore(config, Copy(vm.Ram), vm.SaveVcpuStates(), clock, state, Seams);

        // Restoring writes nothing to RAM (the target verifies it against the source's after this); the guest's
        // driver puts the blocks back when it first runs.
        Assert.Equal(vm.Kernel.IsolatedForReporting(), target.Kernel.IsolatedForReporting());
        Assert.Equal(PageDigests.Compute(vm.Ram, new PageBitmap(vm.Ram.PageCount)),
            PageDigests.Compute(target.Ram, new PageBitmap(target.Ram.PageCount)));
        Assert.True(target.ReportingDriver!.Busy);
        Assert.Equal(StepResult.Progress, target.ReportingDriver.Step());
        Assert.Empty(target.Kernel.IsolatedForReporting());
        Assert.True(target.Kernel.SelfCheck().Ok, target.Kernel.SelfCheck().ToString());
        Assert.Equal(state.Discarded, target.Balloon.DiscardedRanges());
        Settle(target);
        Assert.True(target.Balloon.ReportingStats!.Reports > 0, "the target's driver reports on");
    }

    [Fact]
    public void Options_AreChecked()
    {
        Assert.Throws<ArgumentException>(() => new BalloonOptions { ReportingOrder = 11 }.Validate());
        Assert.Throws<ArgumentException>(() => new BalloonOptions { ReportingDelayMs = -1 }.Validate());
        Assert.Throws<ArgumentException>(() => new BalloonOptions { ReportingBudgetDivisor = 0 }.Validate());
    }

    // ---- helpers --------------------------------------------------------------------------------------------------

    /// <summary>Reports everything at once, at once: the pace a test wants.</summary>
    private static readonly BalloonOptions Fast = new()
    {
        Reporting = true,
        ReportingDelayMs = 0,
        ReportingBudgetDivisor = 1,
        Events = false,
        DeflateOnOom = false,
    };

    private static GuestSeams Seams => GuestSeams.Production with { DeviceThreads = NoDeviceThreads.Instance };

    private static GuestConfig Config(BalloonOptions balloon, byte? poison = null) =>
        new() { RamBytes = RamBytes, Vcpus = 1, Balloon = balloon with { Stats = false }, PoisonValue = poison };

    private static VirtualMachine Boot(TimeProvider time, BalloonOptions balloon, byte? poison = null,
        IBalloonDefences? defences = null, SchedulingPoints? scheduling = null) =>
        VirtualMachine.Boot(Config(balloon, poison), time, Seams with
        {
            BalloonDefences = defences ?? StandardBalloonDefences.Instance,
            Scheduling = scheduling ?? SchedulingPoints.None,
        });

    /// <summary>Writes data into free memory and frees it again, as a finished job leaves its pages.</summary>
    private static List<long> Scribble(VirtualMachine vm, int pages)
    {
        var taken = new List<long>();
        for (int i = 0; i < pages; i++)
        {
            long pfn = vm.Kernel.Allocate(0, PageOwner.Anonymous);
            vm.Memory.FillPages(pfn, 1, 0x77);
            taken.Add(pfn);
        }

        foreach (long pfn in taken)
        {
            vm.Kernel.Free(pfn, 0);
        }

        return taken;
    }

    private static bool IsReported(VirtualMachine vm, long pfn) =>
        (vm.Kernel.ReadDescriptor(pfn).Flags & PageFlags.Reported) != 0;

    private static byte[] Entries(params (long Pfn, int Order)[] blocks) =>
        Raw([.. blocks.Select(b => (b.Pfn << 12, 4096L << b.Order))]);

    private static byte[] Raw(params (long Addr, long Len)[] entries)
    {
        var buffer = new byte[entries.Length * ReportingWire.EntryBytes];
        for (int i = 0; i < entries.Length; i++)
        {
            BitConverter.TryWriteBytes(buffer.AsSpan(i * 16), entries[i].Addr);
            BitConverter.TryWriteBytes(buffer.AsSpan((i * 16) + 8), entries[i].Len);
        }

        return buffer;
    }

    /// <summary>R21's mutant: the host discards whatever the poison value.</summary>
    private sealed class DiscardsPoisoned() : ForwardingBalloonDefences(StandardBalloonDefences.Instance)
    {
        public override bool MayDiscardReported(uint poisonVal) => true;
    }

    /// <summary>R20's mutant: the driver gives the blocks back as soon as it queued the report.</summary>
    private sealed class ReusesEarly() : ForwardingBalloonDefences(StandardBalloonDefences.Instance)
    {
        public override bool ReturnsReportedAfterAck => false;
    }

    /// <summary>R23's mutant: a discard during a migration leaves the dirty log alone.</summary>
    private sealed class DiscardsUnlogged() : ForwardingBalloonDefences(StandardBalloonDefences.Instance)
    {
        public override bool LogsDiscardsDuringMigration => false;
    }

    /// <summary>R22's mutant: the migration skips every page in the discard map.</summary>
    private sealed class TrustsTheMap() : ForwardingBalloonDefences(StandardBalloonDefences.Instance)
    {
        public override bool SkipsOnlyUnbackedDiscards => false;
    }
}
