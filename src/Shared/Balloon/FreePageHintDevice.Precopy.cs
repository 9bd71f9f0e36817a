using Migration.Shared.Devices;
using Migration.Shared.Protocol;

namespace Migration.Shared.Balloon;

/// <summary>
/// The hint device as a precopy participant (QEMU's <c>virtio_balloon_free_page_hint_notify</c>): attaching to a
/// migration that asked for hinting (H1), the command id around every sync (H2), the VM stopping (H5), detaching
/// (H6), and this migration's statistics, which are the report's section.
/// </summary>
public sealed partial class FreePageHintDevice
{
    /// <summary>
    /// Joins a migration that asked for hinting: attaches the bitmap (H1: logging must already be on), starts new
    /// statistics and the hint thread. The first id comes with the setup sync (H2).
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
            _stats = new HintStats { WaitOnAck = (FeatureBits & BalloonFeatureBits.HintWaitOnAck) != 0 };
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
            _stats = _stats with { CommandIdsIssued = _stats.CommandIdsIssued + 1 };
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

    /// <summary>This migration's figures: the report's <c>hints</c> section.</summary>
    public IReadOnlyList<IMigrationStats> MigrationStats() => [Stats];

    /// <summary>H5: the VM stopped or resumed (QEMU's VM state change handler).</summary>
    public void SetVmRunning(bool running)
    {
        using (_scheduling.Lock(_gate))
        {
            _vmStopped = !running;
            Monitor.PulseAll(_gate);
        }
    }
}
