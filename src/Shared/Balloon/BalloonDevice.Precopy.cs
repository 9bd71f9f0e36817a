using Migration.Shared.Devices;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Protocol;

namespace Migration.Shared.Balloon;

/// <summary>
/// The device as a precopy participant: which migration it is in, what that migration skips (held pages, discarded
/// pages), the steps its defences take (B3 to B5) and this migration's statistics, which are the report's sections.
/// </summary>
public sealed partial class BalloonDevice
{
    private MigrationBitmap? _bitmap;
    private MigrationBitmap? _joining; // the bitmap of a migration being set up, while its defences run
    private bool _skipping; // this migration skips held pages (off: sent as zero pages, as QEMU does)
    private bool _pressureDuringMigration;
    private BalloonMigrationStats _migration = new(); // the running (or last) migration's

    /// <summary>
    /// Joins every migration (the balloon's pages are the device's, whatever the capabilities): uses what is queued,
    /// then clears the held pages from the bitmap, once (B3, B5), unless the migration sends them as zero pages
    /// (<see cref="MigrationCapabilities.SkipBallooned"/> off).
    /// </summary>
    public bool Setup(PrecopySetup setup)
    {
        ArgumentNullException.ThrowIfNull(setup);
        using (_scheduling.Lock(_gate))
        {
            // The defences skip into the joining bitmap; buffers they use meanwhile are not yet this migration's.
            _joining = setup.Bitmap;
            _skipping = setup.Capabilities.SkipBallooned;
            long skipped = _defences.AtSetup(this);
            _joining = null;
            _bitmap = setup.Bitmap;
            _migration = new BalloonMigrationStats { SkipsBallooned = _skipping, PagesSkipped = skipped };
            _pressureDuringMigration = false;
            ReportingSetupLocked(setup);
        }

        RaisePending();
        return true;
    }

    public void BeforeSync(bool vmRunning)
    {
    }

    public void AfterSync(bool vmRunning)
    {
        using (_scheduling.Lock(_gate))
        {
            if (_bitmap is not null)
            {
                _defences.AfterSync(this);
            }
        }
    }

    /// <summary>
    /// The VM is paused and the last pages are out: uses every queued buffer (B4) so the held ranges saved next are
    /// exactly the pages the guest has left in the balloon.
    /// </summary>
    public void Complete()
    {
        using (_scheduling.Lock(_gate))
        {
            _defences.BeforeSave(this);
        }

        RaisePending();
    }

    public void Cleanup(MigrationStatus outcome)
    {
        using (_scheduling.Lock(_gate))
        {
            _bitmap = null;
            _pressureDuringMigration = false;
        }
    }

    /// <summary>
    /// This migration's figures, with the device as it stands now: the report's <c>balloon</c> section, and its
    /// <c>reporting</c> section when the guest reports free pages.
    /// </summary>
    public IReadOnlyList<IMigrationStats> MigrationStats()
    {
        using (_scheduling.Lock(_gate))
        {
            var balloon = _migration with
            {
                Encoding = Encoding.ToString(),
                Features = $"0x{Features:x}",
                TargetPages = TargetPages,
                ActualPages = ActualPages,
                HeldPages = _held.Count,
                DeviceErrors = _stats.DeviceErrors,
                DeviceError = _stats.LastError,
            };
            return ReportingMigrationStatsLocked() is { } reporting ? [balloon, reporting] : [balloon];
        }
    }

    // ---- the steps the defences take (under the lock) ------------------------------------------------------------

    void IBalloonDeviceSteps.UseQueued() => DrainLocked();

    List<PageRange> IBalloonDeviceSteps.Held() => HeldRangesLocked();

    long IBalloonDeviceSteps.Skip(IEnumerable<PageRange> ranges)
    {
        if ((_bitmap ?? _joining) is not { } bitmap || !_skipping)
        {
            return 0;
        }

        long cleared = 0;
        foreach (var r in ranges)
        {
            cleared += bitmap.Skip(r.First, r.Count);
        }

        return cleared;
    }
}
