using Migration.Shared.Concurrency;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;

namespace Migration.Shared.Balloon;

/// <summary>
/// The host side of free page reporting, inside the balloon device and under its lock: checks each report, discards
/// the blocks (QEMU's <c>virtio_balloon_handle_report</c>), and keeps the discard map that lets a migration skip them.
/// </summary>
/// <remarks>
/// <para>A report is all or nothing: every block must be inside RAM, a power-of-two size of at least the reporting
/// order, aligned, named once, and free in the guest's own descriptors (isolated for reporting, as a correct driver
/// sends it, or on a free list). Otherwise nothing is
/// discarded and the device records an error; the buffer is still used, so the driver puts its blocks back.</para>
/// <para>Poisoning: a discarded page reads as zero. When the guest poisons free pages with a value other than zero, a
/// discard would leave the pages not holding the pattern the guest checks, so the device acknowledges without
/// discarding (QEMU's rule), and the migration sends those pages as it sends any.</para>
/// <para>The discard map goes stale as soon as the guest allocates a reported block again, which it may do the moment
/// the report is acknowledged, without telling the host. So a migration never trusts the map alone: it skips a page
/// only if the map has it and the host kernel still backs nothing there (<see cref="GuestRam.KeepOnlyUnbacked"/>),
/// after dirty logging is on. A page stored to before that check is backed and is sent; a store after it is logged.
/// </para>
/// </remarks>
internal sealed class PageReportingHost
{
    private readonly GuestRam _ram;
    private readonly int _minOrder;
    private readonly uint _poisonVal;
    private readonly Func<long, int, bool> _freeInGuest;
    private readonly IBalloonDefences _defences;
    private readonly SchedulingPoints _scheduling;
    private readonly PageBitmap _discarded;
    private readonly Action<long>? _stored;

    /// <param name="poisons">PAGE_POISON was negotiated: the guest fills freed pages with <paramref name="poisonVal"/>.</param>
    public PageReportingHost(GuestRam ram, int minOrder, bool poisons, uint poisonVal,
        Func<long, int, bool> freeInGuest, IBalloonDefences defences, SchedulingPoints scheduling,
        Action<long>? storeObserver = null)
    {
        _stored = storeObserver;
        _scheduling = scheduling;
        _ram = ram;
        _minOrder = minOrder;
        _poisonVal = poisons ? poisonVal : 0;
        _freeInGuest = freeInGuest;
        _defences = defences;
        _discarded = new PageBitmap(ram.PageCount);
    }

    public long Reports { get; private set; }

    public long BlocksReported { get; private set; }

    public long PagesDiscarded { get; private set; }

    /// <summary>Pages reported but kept because the guest's poison value is not zero.</summary>
    public long PagesKeptPoisoned { get; private set; }

    /// <summary>Pages the discard map has (some may be backed again by now).</summary>
    public long DiscardedPages => _discarded.Count;

    /// <summary>
    /// Takes a report. <paramref name="migrating"/> is the dirty log of a running migration, if one runs. A discard
    /// is a host-side store of zeros the guest's dirty log never sees, so during a migration every discarded page is
    /// logged as written: the target may hold what an earlier round sent there, and a later allocation that does not
    /// write every page of its block (a table that formats only its header) would read that old data on the target
    /// and zeros here. The pages go as zero pages (a few bytes each). Returns the pages discarded, or an error (nothing
    /// discarded).
    /// </summary>
    public (long Discarded, string? Error) Receive(byte[] buffer, DirtyLog? migrating)
    {
        Reports++;
        var blocks = ReportingWire.Decode(buffer, _ram.PageCount, _minOrder, out string? problem);
        if (blocks is null)
        {
            return (0, $"reporting: {problem}");
        }

        foreach (var (pfn, order) in blocks)
        {
            if (!_freeInGuest(pfn, order))
            {
                return (0, $"reporting: the order-{order} block at page {pfn} is not free in the guest's own " +
                    "descriptors; nothing in the report was discarded");
            }
        }

        // The guest's descriptors are a sanity check, not a defence: a driver that reuses a block before the report
        // is used (R20) can allocate it right here, after the check and before the discard.
        _scheduling.Preempt();
        BlocksReported += blocks.Count;
        long pages = blocks.Sum(b => 1L << b.Order);
        if (!_defences.MayDiscardReported(_poisonVal))
        {
            PagesKeptPoisoned += pages;
            return (0, null);
        }

        foreach (var (pfn, order) in blocks)
        {
            long count = 1L << order;
            _ram.Discard(pfn, count);
            _discarded.SetRange(pfn, count);
            bool log = migrating is not null && _defences.LogsDiscardsDuringMigration;
            for (long p = pfn; p < pfn + count && (log || _stored is not null); p++)
            {
                if (log)
                {
                    migrating!.MarkDirty(p); // after the store, as for any write (the log's ordering contract)
                }

                _stored?.Invoke(p);
            }
        }

        PagesDiscarded += pages;
        return (pages, null);
    }

    /// <summary>
    /// A migration starts (dirty logging is on): clears from its bitmap the discarded pages the host still backs
    /// nothing for, and drops from the map the pages that are backed again. Returns the pages skipped.
    /// </summary>
    public long Skip(MigrationBitmap bitmap)
    {
        if (_discarded.Count == 0)
        {
            return 0;
        }

        if (_defences.SkipsOnlyUnbackedDiscards)
        {
            foreach (var (first, count) in _discarded.SetRuns().ToList())
            {
                _ram.KeepOnlyUnbacked(_discarded, first, count);
            }
        }

        long skipped = 0;
        foreach (var (first, count) in _discarded.SetRuns())
        {
            skipped += bitmap.Skip(first, count);
        }

        return skipped;
    }

    /// <summary>The discard map as ranges (it travels with the device state).</summary>
    public List<PageRange> Ranges() => [.. _discarded.SetRuns().Select(r => new PageRange(r.First, r.Count))];

    /// <summary>
    /// A migrated device: takes the source's discard map as a filter. The target never received those pages unless
    /// they were sent, and the next migration from here checks residency before trusting any of them.
    /// </summary>
    public void Restore(IReadOnlyList<PageRange> discarded)
    {
        foreach (var r in discarded)
        {
            _discarded.SetRange(r.First, r.Count);
        }
    }
}
