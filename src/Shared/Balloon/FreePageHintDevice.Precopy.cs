using Migration.Shared.Devices;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;

namespace Migration.Shared.Balloon;

/// <summary>
/// The hint device as a precopy participant (QEMU's <c>virtio_balloon_free_page_hint_notify</c>): attaching to a
/// migration that asked for hinting (H1), the command id around every sync (H2), the VM stopping (H5), detaching
/// (H6), and this migration's counters.
/// </summary>
public sealed partial class FreePageHintDevice
{
    /// <summary>
    /// Joins a migration that asked for hinting: attaches the bitmap (H1: logging must already be on), resets the
    /// counters and starts the hint thread. The first id comes with the setup sync (H2).
    /// </summary>
    public bool Setup(PrecopySetup setup)
    {
        ArgumentNullException.ThrowIfNull(setup);
        if (!setup.Capabilities.FreePageHinting)
        {
            return false;
        }

        if (!setup.Bitmap.Log.Enabled)
        {
            throw new InvalidOperationException(
                "free page hinting needs dirty logging on before the first command id (H1)");
        }

        using (_scheduling.Lock(_gate))
        {
            _bitmap = setup.Bitmap;
            _failed = false;
            _counters = default;
            Status = _defences.Next(Status, HintEvent.Attach);
        }

        _hintThread = _threads.Start("hint thread", Run);
        return true;
    }

    /// <summary>H2, before a sync: no hint is applied until the next id.</summary>
    public void BeforeSync(bool vmRunning)
    {
        using (_scheduling.Lock(_gate))
        {
            if (_bitmap is not null)
            {
                Status = _defences.Next(Status, HintEvent.StopBeforeSync);
            }
        }
    }

    /// <summary>
    /// H2, after a sync: a new id if the VM runs, DONE otherwise; nothing once hinting has failed (H9).
    /// </summary>
    public void AfterSync(bool vmRunning)
    {
        using (_scheduling.Lock(_gate))
        {
            if (_bitmap is null || _failed)
            {
                return;
            }

            if (!vmRunning)
            {
                Status = _defences.Next(Status, HintEvent.FinalSync);
                return;
            }

            CommandId = HintCommandId.Next(CommandId);
            Status = _defences.Next(Status, HintEvent.NewCommandId);
            _counters.CommandIdsIssued++;
            _metrics.HintCommandIds.Add(1);
            Monitor.PulseAll(_gate);
        }
    }

    public void Complete()
    {
    }

    /// <summary>
    /// H6: completion, failure or cancel. DONE, detach, drop whatever is still queued, stop the hint thread.
    /// </summary>
    public void Cleanup(MigrationStatus outcome)
    {
        using (_scheduling.Lock(_gate))
        {
            if (_bitmap is not null)
            {
                Status = _defences.Next(Status, HintEvent.Detach);
            }

            _bitmap = null;
            _queue.DropAll();
        }

        _hintThread?.Dispose();
        _hintThread = null;
    }

    public void Report(MigrationReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var stats = Stats;
        report.Transfer.PagesSkippedByHints = stats.PagesCleared;
        report.Hints = new MigrationReport.HintsSection
        {
            WaitOnAck = (FeatureBits & BalloonFeatureBits.HintWaitOnAck) != 0,
            CmdIds = stats.CommandIdsIssued,
            BlocksReceived = stats.BlocksReceived,
            BlocksApplied = stats.BlocksApplied,
            BlocksDroppedStale = stats.BlocksDroppedStale,
            PagesCleared = stats.PagesCleared,
            DeviceErrors = stats.DeviceErrors,
            DeviceError = stats.Error,
        };
    }

    /// <summary>H5: the VM stopped or resumed (QEMU's VM state change handler).</summary>
    public void SetVmRunning(bool running)
    {
        using (_scheduling.Lock(_gate))
        {
            _vmStopped = !running;
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>The migration's counters, mutated under the device lock only.</summary>
    private struct Counters
    {
        public long CommandIdsIssued;
        public long BlocksReceived;
        public long BlocksApplied;
        public long BlocksDroppedStale;
        public long PagesCleared;
        public long DeviceErrors;
        public string? Error;

        public readonly HintStats Snapshot() => new()
        {
            CommandIdsIssued = CommandIdsIssued,
            BlocksReceived = BlocksReceived,
            BlocksApplied = BlocksApplied,
            BlocksDroppedStale = BlocksDroppedStale,
            PagesCleared = PagesCleared,
            DeviceErrors = DeviceErrors,
            Error = Error,
        };
    }
}
