using Migration.Shared.Balloon;
using Migration.Shared.Concurrency;
using Migration.Shared.Devices;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Protocol;
using Migration.TestSupport;

namespace Migration.Shared.Tests.Balloon;

public sealed class FreePageHintDeviceTests
{
    private const long Pages = 4096;

    internal static FreePageHintDevice NewDevice() =>
        new(Pages, queueCapacity: 8, SchedulingPoints.None, StandardHintDefences.Instance, NoDeviceThreads.Instance);

    private static PrecopySetup Hinting(MigrationBitmap bitmap) =>
        new(bitmap, new MigrationCapabilities { FreePageHinting = true });

    private static (FreePageHintDevice Device, MigrationBitmap Bitmap, DirtyLog Log) Attached(
        DirtyLogMode mode = DirtyLogMode.Eager)
    {
        var device = NewDevice();
        var log = new DirtyLog(Pages, mode, clearChunkPages: 1024);
        log.Enable();
        var bitmap = new MigrationBitmap(log);
        bitmap.SetAll();
        Assert.True(device.Setup(Hinting(bitmap)));
        device.AfterSync(vmRunning: true); // first id, REQUESTED
        return (device, bitmap, log);
    }

    /// <summary>
    /// The driver's thread sleeps while nothing is asked of it; the config change must wake it for each new id, for
    /// the stop before a sync and for DONE, or a migration waits up to a second for hints.
    /// </summary>
    [Fact]
    public void EveryChangeOfTheIdTheGuestReads_RaisesConfigChanged()
    {
        var device = NewDevice();
        var seen = new List<uint>();
        device.ConfigChanged = () => seen.Add(device.ConfigCommandId);
        var log = new DirtyLog(Pages, DirtyLogMode.Eager, clearChunkPages: 1024);
        log.Enable();
        Assert.True(device.Setup(Hinting(new MigrationBitmap(log))));
        device.AfterSync(vmRunning: true);
        uint first = device.ConfigCommandId;
        device.BeforeSync(vmRunning: true);
        device.AfterSync(vmRunning: true);
        uint second = device.ConfigCommandId;
        device.BeforeSync(vmRunning: false);
        device.AfterSync(vmRunning: false);
        device.Cleanup(MigrationStatus.Completed);

        Assert.True(HintCommandId.IsRunId(first) && HintCommandId.IsRunId(second) && first != second);
        Assert.Contains(first, seen);
        Assert.Contains(second, seen);
        Assert.Contains(HintCommandId.Stop, seen);
        Assert.Equal(HintCommandId.Done, seen[^1]);
    }

    private static void Drain(FreePageHintDevice device)
    {
        while (device.ProcessOne())
        {
        }
    }

    [Fact]
    public void HintingNeedsDirtyLoggingOn_H1()
    {
        var device = NewDevice();
        var log = new DirtyLog(Pages, DirtyLogMode.Eager);
        var ex = Assert.Throws<InvalidOperationException>(() => device.Setup(Hinting(new MigrationBitmap(log))));
        Assert.Contains("H1", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AMigrationWithoutHinting_IsSatOut()
    {
        var device = NewDevice();
        var log = new DirtyLog(Pages, DirtyLogMode.Eager);
        log.Enable();
        Assert.False(device.Setup(new PrecopySetup(new MigrationBitmap(log), new MigrationCapabilities())));
        device.AfterSync(vmRunning: true);
        Assert.Equal(HintCommandId.Done, device.ConfigCommandId);
    }

    [Fact]
    public void CurrentIdStartsHinting_AndABlockClearsItsBits()
    {
        var (device, bitmap, _) = Attached();
        uint id = device.ConfigCommandId;
        Assert.True(HintCommandId.IsRunId(id));
        Assert.Equal(HintStatus.Requested, device.Status);

        device.AddBuffer(HintBuffer.Id(id));
        device.AddBuffer(HintBuffer.Block(id, 1024, 1024));
        Drain(device);

        Assert.Equal(HintStatus.Start, device.Status);
        Assert.Equal(Pages - 1024, bitmap.Pages.Count);
        Assert.Equal(0, bitmap.Pages.CountRange(1024, 1024));
        var stats = device.Stats;
        Assert.Equal((1, 1, 1024L), (stats.BlocksReceived, stats.BlocksApplied, stats.PagesCleared));
    }

    [Fact]
    public void BlocksOutsideStart_OrWithAnOldId_AreDroppedAsStale_R1()
    {
        var (device, bitmap, _) = Attached();
        uint first = device.ConfigCommandId;
        device.AddBuffer(HintBuffer.Block(first, 0, 1024)); // before START: dropped
        Drain(device);
        device.AddBuffer(HintBuffer.Id(first));
        Drain(device);
        device.BeforeSync(vmRunning: true);
        device.AfterSync(vmRunning: true);
        uint second = device.ConfigCommandId;
        Assert.NotEqual(first, second);
        device.AddBuffer(HintBuffer.Id(first));               // an old run's START: ignored
        device.AddBuffer(HintBuffer.Block(first, 1024, 1024)); // an old run's block: dropped
        Drain(device);

        Assert.Equal(HintStatus.Requested, device.Status);
        Assert.Equal(Pages, bitmap.Pages.Count);
        Assert.Equal(2, device.Stats.BlocksDroppedStale);
    }

    [Fact]
    public void ReplayedStartAfterStop_DoesNotRestartHinting_R10()
    {
        var (device, bitmap, _) = Attached();
        uint id = device.ConfigCommandId;
        device.AddBuffer(HintBuffer.Id(id));
        Drain(device);
        device.BeforeSync(vmRunning: true); // the engine is about to sync
        Assert.Equal(HintCommandId.Stop, device.ConfigCommandId);

        device.AddBuffer(HintBuffer.Id(id)); // the guest replays the current id
        device.AddBuffer(HintBuffer.Block(id, 0, 1024));
        Drain(device);

        Assert.Equal(HintStatus.Stop, device.Status);
        Assert.Equal(Pages, bitmap.Pages.Count);
    }

    [Fact]
    public void StopBufferDuringStart_StopsHinting()
    {
        var (device, _, _) = Attached();
        uint id = device.ConfigCommandId;
        device.AddBuffer(HintBuffer.Id(id));
        device.AddBuffer(HintBuffer.Id(HintCommandId.Stop));
        Drain(device);
        Assert.Equal(HintStatus.Stop, device.Status);
    }

    [Fact]
    public void NothingIsProcessedWhileTheVmIsStopped_H5()
    {
        var (device, bitmap, _) = Attached();
        uint id = device.ConfigCommandId;
        device.AddBuffer(HintBuffer.Id(id));
        Drain(device);
        device.SetVmRunning(false);
        long seq = device.AddBuffer(HintBuffer.Block(id, 0, 1024));
        Assert.False(device.ProcessOne());
        Assert.False(device.IsUsed(seq));
        Assert.Equal(Pages, bitmap.Pages.Count);
        device.SetVmRunning(true);
        Assert.True(device.ProcessOne());
        Assert.True(device.IsUsed(seq));
    }

    [Fact]
    public void ManualMode_ReArmsTheLogChunkBeforeClearingBits_R6()
    {
        var (device, bitmap, log) = Attached(DirtyLogMode.Manual);
        log.MarkDirty(1500);
        bitmap.SyncFromLog(); // fetched, not cleared: the page's log bit stays set until its chunk is cleared
        Assert.True(log.IsLogged(1500));
        uint id = device.ConfigCommandId;
        device.AddBuffer(HintBuffer.Id(id));
        device.AddBuffer(HintBuffer.Block(id, 1024, 1024));
        Drain(device);

        Assert.False(log.IsLogged(1500)); // re-armed, so the next sync does not bring the page back
        var next = new PageBitmap(Pages);
        log.SyncInto(next);
        Assert.Equal(0, next.Count);
    }

    [Fact]
    public void EagerMode_NeverTouchesTheWriteLog_R4()
    {
        var (device, bitmap, log) = Attached();
        uint id = device.ConfigCommandId;
        device.AddBuffer(HintBuffer.Id(id));
        Drain(device);
        log.MarkDirty(1500); // a write after the hint was issued (the guest reused the page early)
        device.AddBuffer(HintBuffer.Block(id, 1024, 1024));
        Drain(device);

        Assert.True(log.IsLogged(1500));
        bitmap.SyncFromLog();
        Assert.True(bitmap.Pages.Get(1500)); // the write comes back at the next sync and is sent
    }

    public static TheoryData<HintBuffer, string> BadBuffers(uint id) => new()
    {
        { new HintBuffer(HintBufferKind.CommandId, id, Length: 8), "command-id buffer of 8 bytes" },
        { HintBuffer.Block(id, Pages, 1024), "outside guest RAM" },
        { HintBuffer.Block(id, -1024, 1024), "outside guest RAM" },
        { HintBuffer.Block(id, 512, 1024), "misaligned" },
        { HintBuffer.Block(id, 1024, 1000), "misaligned" },
        { HintBuffer.Block(id, 1024, 0), "free block of 0 pages" },
    };

    [Theory]
    [MemberData(nameof(BadBuffers), 0x80000001u)]
    public void MalformedBuffer_IsADeviceError_AndHintingStopsForTheMigration_H9(HintBuffer bad, string expected)
    {
        var (device, bitmap, _) = Attached();
        uint id = device.ConfigCommandId;
        Assert.Equal(0x80000001u, id);
        device.AddBuffer(HintBuffer.Id(id));
        device.AddBuffer(bad);
        device.AddBuffer(HintBuffer.Block(id, 0, 1024)); // queued after the error: dropped with it
        Drain(device);

        var stats = device.Stats;
        Assert.Equal(1, stats.DeviceErrors);
        Assert.Contains(expected, stats.Error, StringComparison.Ordinal);
        Assert.Equal(HintStatus.Done, device.Status);
        Assert.Equal(Pages, bitmap.Pages.Count); // nothing applied

        device.BeforeSync(vmRunning: true);
        device.AfterSync(vmRunning: true); // later syncs do not restart hinting
        Assert.Equal(HintCommandId.Done, device.ConfigCommandId);
    }

    [Fact]
    public void FloodingTheQueue_IsADeviceError()
    {
        var (device, _, _) = Attached();
        uint id = device.ConfigCommandId;
        for (int i = 0; i < device.QueueCapacity; i++)
        {
            Assert.True(device.AddBuffer(HintBuffer.Block(id, 0, 1024)) >= 0);
        }

        Assert.Equal(-1, device.AddBuffer(HintBuffer.Block(id, 0, 1024)));
        Assert.Contains("overflow", device.Stats.Error, StringComparison.Ordinal);
        Assert.Equal(0, device.Queued); // dropped, and the driver sees its buffers used
    }

    [Fact]
    public void ABatchAddedBeforeOneKick_StopsAtTheOverflow()
    {
        var (device, _, _) = Attached();
        var batch = new HintBuffer[device.QueueCapacity + 5];
        Array.Fill(batch, HintBuffer.Block(device.ConfigCommandId, 0, 1024));
        Assert.Equal(device.QueueCapacity, device.AddBuffers(batch));
        Assert.Equal(1, device.Stats.DeviceErrors);
        Assert.Contains("overflow", device.Stats.Error, StringComparison.Ordinal);
        Assert.Equal(0, device.Queued);
    }

    [Fact]
    public void Cleanup_ReportsDone_AndDropsWhatIsQueued_H6()
    {
        var (device, _, _) = Attached();
        long seq = device.AddBuffer(HintBuffer.Id(device.ConfigCommandId));
        device.Cleanup(MigrationStatus.Completed);
        Assert.Equal(HintCommandId.Done, device.ConfigCommandId);
        Assert.True(device.IsUsed(seq));
    }
}
