using Migration.RaceFuzzer.Tests.Mutants;
using Migration.Shared.Balloon;
using Migration.Shared.Concurrency;
using Migration.Shared.Devices;
using Migration.Shared.DirtyTracking;
using Migration.TestSupport;

namespace Migration.RaceFuzzer.Tests.ScriptedSchedules;

/// <summary>
/// Races of the hint device written out as one fixed schedule each, with and without the defence: the write survives
/// only with it. They pin a defence on its own where the fuzzer's mutant removes two at once (R9).
/// </summary>
public sealed class HintDeviceScheduleTests
{
    private const long Pages = 4096;

    private static (FreePageHintDevice Device, MigrationBitmap Bitmap, DirtyLog Log) Attached(IHintDefences defences)
    {
        var device = new FreePageHintDevice(Pages, queueCapacity: 8, SchedulingPoints.None, defences,
            NoDeviceThreads.Instance);
        var log = new DirtyLog(Pages, DirtyLogMode.Eager, clearChunkPages: 1024);
        log.Enable();
        var bitmap = new MigrationBitmap(log);
        bitmap.SetAll();
        Assert.True(device.Setup(new PrecopySetup(bitmap, new MigrationCapabilities { FreePageHinting = true })));
        device.AfterSync(vmRunning: true);
        return (device, bitmap, log);
    }

    private static void Drain(FreePageHintDevice device)
    {
        while (device.ProcessOne())
        {
        }
    }

    /// <summary>R10: with the mutant the replayed START re-opens hinting and a block applies mid-sync.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ReplayedStart_DuringTheSyncWindow_ClearsBitsOnlyWithoutTheDefence_R10(bool mutant)
    {
        IHintDefences defences = mutant
            ? new R10HonourReplayedStart.ReplayRestarts(StandardHintDefences.Instance)
            : StandardHintDefences.Instance;
        var (device, bitmap, log) = Attached(defences);
        uint id = device.ConfigCommandId;
        device.AddBuffer(HintBuffer.Id(id));
        Drain(device);
        log.MarkDirty(1100);                  // the guest reused a hinted page and wrote it
        device.BeforeSync(vmRunning: true);   // the engine stops hinting, then syncs
        bitmap.SyncFromLog();
        device.AddBuffer(HintBuffer.Id(id));  // a replayed START arrives before the new id
        device.AddBuffer(HintBuffer.Block(id, 1024, 1024));
        Drain(device);

        Assert.Equal(!mutant, bitmap.Pages.Get(1100)); // the write survives only with the defence
    }

    /// <summary>R9 (H5 alone): while the VM is stopped the hint thread must not apply anything.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BlockQueuedAtStop_IsAppliedDuringStopAndCopyOnlyWithoutTheDefence_R9(bool mutant)
    {
        IHintDefences defences = mutant ? new AppliesWhileStopped() : StandardHintDefences.Instance;
        var (device, bitmap, log) = Attached(defences);
        uint id = device.ConfigCommandId;
        device.AddBuffer(HintBuffer.Id(id));
        Drain(device);
        device.AddBuffer(HintBuffer.Block(id, 1024, 1024)); // queued before the stop, the hint thread lags
        log.MarkDirty(1100);                                 // the guest reused the block early (no wait-on-ack)
        device.SetVmRunning(false);                          // stop-and-copy
        bitmap.SyncFromLog();                                // the final sync picks the write up
        Drain(device);

        Assert.Equal(!mutant, bitmap.Pages.Get(1100));
    }

    private sealed class AppliesWhileStopped() : ForwardingDefences(StandardHintDefences.Instance)
    {
        public override bool ProcessesWhileStopped => true;
    }
}
