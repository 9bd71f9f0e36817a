using Migration.Shared.Devices;

namespace Migration.Shared.Balloon;

/// <summary>
/// Free page reporting (VIRTIO_BALLOON_F_REPORTING): the reporting queue, whose reports
/// <see cref="PageReportingHost"/> checks and discards under the device's lock, and the discard map that travels with
/// the device and lets a migration skip what is still discarded.
/// </summary>
public sealed partial class BalloonDevice
{
    private PageReportingHost? _reporting;
    private PageReportingMigrationStats _reportingMigration = new(); // the running (or last) migration's

    /// <summary>
    /// Told every page a reported block's discard zeroed, as a store is told to the race fuzzer's bookkeeping (a
    /// discard is the host storing zeros). Null in production.
    /// </summary>
    internal Action<long>? StoreObserver { get; init; }

    /// <summary>
    /// Sets up the reporting queue (VIRTIO_BALLOON_F_REPORTING negotiated): reports of blocks of at least
    /// <paramref name="minOrder"/>; <paramref name="freeInGuest"/> reads the guest's descriptors to check that a
    /// reported block is free there. The poison rule follows the negotiated PAGE_POISON and
    /// <paramref name="poisonVal"/>.
    /// </summary>
    public void EnableReporting(int minOrder, uint poisonVal, Func<long, int, bool> freeInGuest)
    {
        ArgumentNullException.ThrowIfNull(freeInGuest);
        if (!BalloonFeatureBits.Has(Features, BalloonFeatureBits.PageReporting))
        {
            throw new InvalidOperationException("free page reporting was not negotiated");
        }

        using (_scheduling.Lock(_gate))
        {
            _reporting = new PageReportingHost(_ram, minOrder,
                BalloonFeatureBits.Has(Features, BalloonFeatureBits.PagePoison), poisonVal, freeInGuest,
                _defences, _scheduling, StoreObserver);
        }
    }

    /// <summary>Free page reporting's totals, or null without reporting.</summary>
    public PageReportingStats? ReportingStats
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return _reporting is not { } r ? null : new PageReportingStats(r.Reports, r.BlocksReported,
                    r.PagesDiscarded, r.PagesKeptPoisoned, r.DiscardedPages);
            }
        }
    }

    /// <summary>The pages free page reporting discarded, as ranges (empty without reporting).</summary>
    public List<PageRange> DiscardedRanges()
    {
        using (_scheduling.Lock(_gate))
        {
            return _reporting?.Ranges() ?? [];
        }
    }

    /// <summary>A migrated device takes the source's discard map (see <see cref="PageReportingHost.Restore"/>).</summary>
    public void RestoreDiscarded(IReadOnlyList<PageRange> discarded)
    {
        ArgumentNullException.ThrowIfNull(discarded);
        using (_scheduling.Lock(_gate))
        {
            _reporting?.Restore(discarded);
        }
    }

    /// <summary>
    /// A migration sets up: skips what is still discarded, if it asks to and the guest reports free pages, and starts
    /// this migration's figures.
    /// </summary>
    private void ReportingSetupLocked(PrecopySetup setup)
    {
        bool skips = setup.Capabilities.SkipDiscarded && _reporting is not null;
        _reportingMigration = new PageReportingMigrationStats
        {
            SkipsDiscarded = skips,
            PagesSkipped = skips ? _reporting!.Skip(setup.Bitmap) : 0,
        };
    }

    /// <summary>This migration's figures with the totals as they are now; null without reporting.</summary>
    private PageReportingMigrationStats? ReportingMigrationStatsLocked() => _reporting is not { } r
        ? null
        : _reportingMigration with
        {
            Reports = r.Reports,
            PagesDiscarded = r.PagesDiscarded,
            PagesKeptPoisoned = r.PagesKeptPoisoned,
            DiscardMapPages = r.DiscardedPages,
        };

    private void ReceiveReport(byte[] buffer)
    {
        var (discarded, error) = _reporting!.Receive(buffer, _bitmap?.Log);
        if (error is not null)
        {
            FailLocked(error);
            return;
        }

        if (_bitmap is not null)
        {
            _reportingMigration = _reportingMigration with
            {
                PagesDiscardedDuringMigration = _reportingMigration.PagesDiscardedDuringMigration + discarded,
            };
        }
    }
}
