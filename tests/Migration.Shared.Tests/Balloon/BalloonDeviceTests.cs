using Migration.Shared.Balloon;
using Migration.Shared.Devices;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.TestSupport;

namespace Migration.Shared.Tests.Balloon;

public sealed class BalloonDeviceTests
{
    private const ulong Chunked = BalloonFeatureBits.PageChunks | BalloonFeatureBits.EventsQueue;

    [Theory]
    [InlineData(BalloonEncoding.PageNumbers)]
    [InlineData(BalloonEncoding.Bitmap)]
    [InlineData(BalloonEncoding.Chunks)]
    public void Inflate_DiscardsThePages_AndDeflateGivesThemBack(BalloonEncoding encoding)
    {
        using var guest = new TestGuest(32L << 20);
        ulong features = new BalloonOptions { Encoding = encoding }.Features;
        var device = new BalloonDevice(guest.Ram, features);
        Assert.Equal(encoding, device.Encoding);
        Fill(guest, 100, 40, 0x5A);

        Assert.True(device.Kick(BalloonVq.Inflate, Encode(device, BalloonVq.Inflate, new PageRange(100, 40))) >= 0);
        Assert.True(device.ProcessOne());

        Assert.Equal(40, device.HeldPages);
        Assert.True(IsZero(guest, 100, 40), "inflated pages read back as zero");
        Assert.Equal([new PageRange(100, 40)], device.HeldRanges());

        Assert.True(device.Kick(BalloonVq.Deflate, Encode(device, BalloonVq.Deflate, new PageRange(110, 10))) >= 0);
        Assert.True(device.ProcessOne());
        Assert.Equal([new PageRange(100, 10), new PageRange(120, 20)], device.HeldRanges());
        Fill(guest, 110, 10, 0x11); // the guest's again
        Assert.Equal(0x11, guest.Ram.Page(115)[7]);

        var stats = device.Stats;
        Assert.Equal((40L, 10L, 30L, 0L),
            (stats.PagesInflated, stats.PagesDeflated, stats.HeldPages, stats.DeviceErrors));
    }

    [Fact]
    public void RogueRequests_AreDeviceErrors_AndDiscardNothing()
    {
        using var guest = new TestGuest(32L << 20);
        var device = new BalloonDevice(guest.Ram, Chunked);
        var errors = new List<string>();
        device.Notified += n =>
        {
            if (n.Kind == BalloonNotificationKind.DeviceError)
            {
                errors.Add(n.Message!);
            }
        };
        Fill(guest, 0, 64, 0x77);
        device.Kick(BalloonVq.Inflate, Encode(device, BalloonVq.Inflate, new PageRange(0, 8)));
        device.Drain();

        // a valid range beside one outside RAM; held pages again; pages half held; a bitmap on a chunk device
        device.Kick(BalloonVq.Inflate,
            Encode(device, BalloonVq.Inflate, new PageRange(20, 4), new PageRange(guest.Ram.PageCount, 1)));
        device.Kick(BalloonVq.Inflate, Encode(device, BalloonVq.Inflate, new PageRange(30, 2), new PageRange(6, 4)));
        device.Kick(BalloonVq.Deflate, Encode(device, BalloonVq.Deflate, new PageRange(4, 8)));
        device.Kick(BalloonVq.Inflate,
            BalloonWire.Encode(BalloonEncoding.Bitmap, [new PageRange(40, 4)], BalloonVq.Inflate));
        device.Drain();

        Assert.Equal(4, device.Stats.DeviceErrors);
        Assert.Contains(errors, e => e.Contains("outside guest RAM", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("already in the balloon", StringComparison.Ordinal));
        // the deflate half held: the held half goes back (the guest may already reuse all of it), the rest is an error
        Assert.Contains(errors, e => e.Contains("not in the balloon; the 4 held pages", StringComparison.Ordinal));
        Assert.Equal([new PageRange(0, 4)], device.HeldRanges());
        Assert.False(IsZero(guest, 8, 56), "a rejected request discarded nothing");
        Assert.True(IsZero(guest, 0, 8));
    }

    [Fact]
    public void Flooding_AndQueuesThatDoNotExist_AreRefused()
    {
        using var guest = new TestGuest(32L << 20);
        var device = new BalloonDevice(guest.Ram, 0, queueCapacity: 4, Concurrency.SchedulingPoints.None,
            NoDeviceThreads.Instance, StandardBalloonDefences.Instance);
        for (int i = 0; i < 4; i++)
        {
            Assert.True(device.Kick(BalloonVq.Inflate, Encode(device, BalloonVq.Inflate, new PageRange(i, 1))) >= 0);
        }

        Assert.Equal(-1, device.Kick(BalloonVq.Inflate, Encode(device, BalloonVq.Inflate, new PageRange(9, 1))));
        Assert.Contains("inflate queue overflow", device.Stats.LastError, StringComparison.Ordinal);
        Assert.Equal(-1, device.Kick(2, BalloonEventWire.Encode(BalloonGuestEvent.PuffFailure, 0))); // no events queue
        Assert.Contains("queue 2", device.Stats.LastError, StringComparison.Ordinal);
        Assert.Equal(2, device.Stats.DeviceErrors);
        device.Drain();
        Assert.Equal(4, device.HeldPages); // what was queued before the flood is served
    }

    [Fact]
    public void QueueIndexes_AreDense_AndFollowTheNegotiatedFeatures()
    {
        Assert.Equal(2, BalloonQueues.IndexOf(BalloonVq.FreePage, BalloonFeatureBits.FreePageHint));
        Assert.Equal(3, BalloonQueues.IndexOf(BalloonVq.FreePage,
            BalloonFeatureBits.FreePageHint | BalloonFeatureBits.StatsQueue));
        Assert.Equal(2, BalloonQueues.IndexOf(BalloonVq.Reporting, BalloonFeatureBits.PageReporting));
        Assert.Equal(-1, BalloonQueues.IndexOf(BalloonVq.Stats, BalloonFeatureBits.FreePageHint));
        Assert.Equal(5, BalloonQueues.IndexOf(BalloonVq.Events, BalloonFeatureBits.Known));
        Assert.Equal(BalloonVq.Events, BalloonQueues.At(2, BalloonFeatureBits.EventsQueue));
        Assert.Null(BalloonQueues.At(3, BalloonFeatureBits.EventsQueue));
        foreach (var q in Enum.GetValues<BalloonVq>())
        {
            Assert.Equal(q, BalloonQueues.At(BalloonQueues.IndexOf(q, BalloonFeatureBits.Known),
                BalloonFeatureBits.Known));
        }
    }

    [Fact]
    public void OurFeatureBits_StayAboveTheSpecs()
    {
        foreach (ulong ours in new[] { BalloonFeatureBits.PageBitmap, BalloonFeatureBits.PageChunks,
            BalloonFeatureBits.EventsQueue })
        {
            Assert.True(ours >= 1UL << 50);
        }

        Assert.Equal(1UL << 2, BalloonFeatureBits.DeflateOnOom);
        Assert.Equal(1UL << 5, BalloonFeatureBits.PageReporting);
    }

    [Fact]
    public void SetTargetPages_ChecksItsRange_AndBumpsTheConfigGeneration()
    {
        using var guest = new TestGuest(32L << 20);
        var device = new BalloonDevice(guest.Ram, Chunked);
        var seen = new List<BalloonNotification>();
        device.Notified += seen.Add;
        Assert.Throws<ArgumentOutOfRangeException>(() => device.SetTargetPages(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.SetTargetPages(guest.Ram.PageCount + 1));
        int generation = device.ConfigGeneration;
        device.SetTargetPages(1000);
        device.SetTargetPages(1000); // no change, no interrupt
        Assert.Equal(generation + 1, device.ConfigGeneration);
        Assert.Equal(1000, Assert.Single(seen).TargetPages);

        device.WriteActual(-5);
        device.WriteActual(12);
        Assert.Equal(12, device.ActualPages);
        Assert.Equal(1, device.Stats.DeviceErrors);
        Assert.Contains(seen, n => n.Kind == BalloonNotificationKind.ActualChanged && n.ActualPages == 12);
    }

    [Fact]
    public void GuestPressure_StopsInflating_AndDuringMigrationTheHostDoesNotFightTheGuest()
    {
        using var guest = new TestGuest(32L << 20);
        var device = new BalloonDevice(guest.Ram, Chunked);
        var seen = new List<BalloonNotification>();
        device.Notified += seen.Add;
        device.SetTargetPages(4000);
        device.WriteActual(1500);
        device.Kick(BalloonVq.Events, BalloonEventWire.Pressure(MemoryPressure.Low));
        device.Drain();
        Assert.Equal(4000, device.TargetPages); // low pressure: noted, nothing changes

        var bitmap = new MigrationBitmap(guest.Log);
        Assert.True(device.Setup(new PrecopySetup(bitmap, new MigrationCapabilities())));
        device.Kick(BalloonVq.Events, BalloonEventWire.Pressure(MemoryPressure.Critical));
        device.Drain();
        Assert.Equal(1500, device.TargetPages);
        Assert.Contains(seen, n => n is { Kind: BalloonNotificationKind.Pressure, Level: MemoryPressure.Critical });
        Assert.Contains(seen, n => n is { Kind: BalloonNotificationKind.TargetChanged, TargetPages: 1500 });

        var refused = Assert.Throws<InvalidOperationException>(() => device.SetTargetPages(2000));
        Assert.Contains("memory pressure", refused.Message, StringComparison.Ordinal);
        device.SetTargetPages(1000); // deflating is always allowed
        device.Cleanup(MigrationStatus.Completed);
        device.SetTargetPages(2000); // the migration is over

        device.Kick(BalloonVq.Events, BalloonEventWire.Encode(BalloonGuestEvent.PuffFailure, 0));
        device.Kick(BalloonVq.Events, new byte[3]);
        device.Drain();
        Assert.Equal(1500, device.TargetPages);
        Assert.Equal(1, device.Stats.DeviceErrors);
    }

    /// <summary>
    /// A device with 500 pages queued for inflating, then a migration set up with <paramref name="capabilities"/>
    /// (the inflate is used at setup), a further 100 pages inflated during it.
    /// </summary>
    private static (BalloonDevice Device, MigrationBitmap Bitmap) MigratingWithInflates(TestGuest guest,
        MigrationCapabilities capabilities)
    {
        var device = new BalloonDevice(guest.Ram, Chunked);
        device.Kick(BalloonVq.Inflate, Encode(device, BalloonVq.Inflate, new PageRange(1000, 500)));
        var bitmap = new MigrationBitmap(guest.Log);
        bitmap.SetAll();
        guest.Log.Enable();
        Assert.True(device.Setup(new PrecopySetup(bitmap, capabilities)));
        device.Kick(BalloonVq.Inflate, Encode(device, BalloonVq.Inflate, new PageRange(3000, 100)));
        device.ProcessOne();
        return (device, bitmap);
    }

    [Fact]
    public void Migration_SkipsHeldPages_InflatesDuringItToo_AndCompleteUsesWhatIsQueued()
    {
        using var guest = new TestGuest(32L << 20);
        var (device, bitmap) = MigratingWithInflates(guest, new MigrationCapabilities());

        // queued before setup: used before the skip, so it is skipped too
        Assert.Equal(0, bitmap.Pages.CountRange(1000, 500));
        Assert.Equal(guest.Ram.PageCount - 600, bitmap.Remaining);
        Assert.Equal(0, bitmap.Pages.CountRange(3000, 100));

        // deflated during the migration: the bits stay clear, the write path logs what the guest writes
        device.Kick(BalloonVq.Deflate, Encode(device, BalloonVq.Deflate, new PageRange(1000, 10)));
        device.ProcessOne();
        Fill(guest, 1000, 1, 0x42, log: true);
        bitmap.SyncFromLog();
        Assert.Equal(1, bitmap.Pages.CountRange(1000, 10));

        device.Kick(BalloonVq.Inflate, Encode(device, BalloonVq.Inflate, new PageRange(5000, 8)));
        device.Complete();
        Assert.Equal(0, device.Queued);
        Assert.Equal(598, device.HeldPages);

        var report = new MigrationReport();
        device.Report(report);
        device.Cleanup(MigrationStatus.Completed);
        Assert.Equal(608, report.Transfer.PagesSkippedAsBallooned);
        Assert.Equal((108L, 10L, 598L), (report.Balloon!.InflatedDuringMigration,
            report.Balloon.DeflatedDuringMigration, report.Balloon.HeldPages));
        Assert.Equal("Chunks", report.Balloon.Encoding);
    }

    [Fact]
    public void WithoutSkipping_HeldPagesStayInTheBitmap_AndAreSentAsZeroPages()
    {
        using var guest = new TestGuest(32L << 20);
        var (device, bitmap) = MigratingWithInflates(guest, new MigrationCapabilities { SkipBallooned = false });

        Assert.Equal(guest.Ram.PageCount, bitmap.Remaining);
        Assert.True(IsZero(guest, 1000, 500));
        var report = new MigrationReport();
        device.Report(report);
        Assert.Equal((0L, false, 600L), (report.Transfer.PagesSkippedAsBallooned, report.Balloon!.SkipsBallooned,
            report.Balloon.HeldPages));
    }

    private static byte[] Encode(BalloonDevice device, BalloonVq queue, params PageRange[] ranges) =>
        BalloonWire.Encode(device.Encoding, ranges, queue);

    private static void Fill(TestGuest guest, long first, long count, byte value, bool log = false)
    {
        for (long p = first; p < first + count; p++)
        {
            guest.Ram.Page(p).Fill(value);
            if (log)
            {
                guest.Log.MarkDirty(p);
            }
        }
    }

    private static bool IsZero(TestGuest guest, long first, long count)
    {
        for (long p = first; p < first + count; p++)
        {
            if (guest.Ram.Page(p).ContainsAnyExcept((byte)0))
            {
                return false;
            }
        }

        return true;
    }
}
