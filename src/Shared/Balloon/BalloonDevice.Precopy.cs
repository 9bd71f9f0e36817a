using Migration.Shared.Devices;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;

namespace Migration.Shared.Balloon;

/// <summary>
/// The device as a precopy participant: which migration it is in, what that migration skips (held pages, discarded
/// pages), its counters, the steps its defences take (B3 to B5) and its part of the report.
/// </summary>
public sealed partial class BalloonDevice
{
    private MigrationBitmap? _bitmap;
    private MigrationBitmap? _joining; // the bitmap of a migration being set up, while its defences run
    private bool _skipping; // this migration skips held pages (off: sent as zero pages, as QEMU does)
    private bool _skippingDiscarded;
    private bool _pressureDuringMigration;
    private MigrationCounters _migration;

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
            _migration = default;
            _pressureDuringMigration = false;
            _migration.Skipping = _skipping;
            _migration.PagesSkipped = skipped;
            _skippingDiscarded = setup.Capabilities.SkipDiscarded && _reporting is not null;
            _migration.SkippingDiscarded = _skippingDiscarded;
            if (_skippingDiscarded)
            {
                _migration.DiscardedSkipped = _reporting!.Skip(setup.Bitmap);
            }
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

    public void Report(MigrationReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var stats = Stats;
        MigrationCounters m;
        using (_scheduling.Lock(_gate))
        {
            m = _migration;
        }

        report.Transfer.PagesSkippedAsBallooned = m.PagesSkipped;
        report.Transfer.PagesSkippedAsDiscarded = m.DiscardedSkipped;
        if (ReportingStats is { } r)
        {
            report.Reporting = new MigrationReport.ReportingSection
            {
                SkipsDiscarded = m.SkippingDiscarded,
                PagesSkipped = m.DiscardedSkipped,
                PagesDiscardedDuringMigration = m.DiscardedDuring,
                Reports = r.Reports,
                PagesDiscarded = r.PagesDiscarded,
                PagesKeptPoisoned = r.PagesKeptPoisoned,
                DiscardMapPages = r.DiscardMapPages,
            };
        }

        report.Balloon = new MigrationReport.BalloonSection
        {
            Encoding = Encoding.ToString(),
            SkipsBallooned = m.Skipping,
            Features = $"0x{Features:x}",
            TargetPages = stats.TargetPages,
            ActualPages = stats.ActualPages,
            HeldPages = stats.HeldPages,
            PagesSkipped = m.PagesSkipped,
            InflatedDuringMigration = m.Inflated,
            DeflatedDuringMigration = m.Deflated,
            GuestEvents = m.Events,
            DeviceErrors = stats.DeviceErrors,
            DeviceError = stats.LastError,
        };
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

    /// <summary>What the running (or last) migration did; reset at its setup.</summary>
    private struct MigrationCounters
    {
        public bool Skipping;
        public long PagesSkipped;
        public long Inflated;
        public long Deflated;
        public long Events;
        public bool SkippingDiscarded;
        public long DiscardedSkipped;
        public long DiscardedDuring;
    }
}
