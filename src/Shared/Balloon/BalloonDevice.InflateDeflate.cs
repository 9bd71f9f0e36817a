using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest.Kernel;

namespace Migration.Shared.Balloon;

/// <summary>
/// The balloon itself: the map of pages it holds, the inflate and deflate buffers that fill and empty it (an inflated
/// page is discarded from guest RAM, a deflated one handed back), and the guest's events, which stop the host
/// inflating further.
/// </summary>
public sealed partial class BalloonDevice
{
    private readonly PageBitmap _held;
    private readonly List<PageRange> _scratch = [];

    /// <summary>Pages the device holds (inflated, not yet deflated).</summary>
    public long HeldPages
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return _held.Count;
            }
        }
    }

    /// <summary>The held pages as sorted, disjoint ranges.</summary>
    public List<PageRange> HeldRanges()
    {
        using (_scheduling.Lock(_gate))
        {
            return HeldRangesLocked();
        }
    }

    /// <summary>
    /// A migrated device on the target: config and held ranges as the source saved them. The caller has checked the
    /// ranges against the guest's own descriptors; the pages are discarded here (the target never received them).
    /// </summary>
    public void Restore(long targetPages, long actualPages, IReadOnlyList<PageRange> held)
    {
        ArgumentNullException.ThrowIfNull(held);
        using (_scheduling.Lock(_gate))
        {
            TargetPages = targetPages;
            ActualPages = actualPages;
            foreach (var r in held)
            {
                _held.SetRange(r.First, r.Count);
                _ram.Discard(r.First, r.Count);
            }

            // No config interrupt: the guest saw this config on the source already. (Deflate-on-OOM's "never
            // re-inflate by itself" holds across a migration; a target the guest had not reached yet needs a new
            // SetBalloon here.)
        }
    }

    /// <summary>How many pages of [first, first+count) the balloon holds.</summary>
    public long HeldIn(long first, long count)
    {
        using (_scheduling.Lock(_gate))
        {
            return _held.CountRange(first, count);
        }
    }

    private List<PageRange> HeldRangesLocked() => [.. _held.SetRuns().Select(r => new PageRange(r.First, r.Count))];

    private void Inflate(byte[] buffer)
    {
        _stats = _stats with { InflateRequests = _stats.InflateRequests + 1 };
        if (BalloonWire.Decode(Encoding, buffer, BalloonVq.Inflate, RamPages, _scratch) is string error)
        {
            FailLocked($"inflate: {error}");
            return;
        }

        foreach (var r in _scratch)
        {
            if (_held.CountRange(r.First, r.Count) != 0)
            {
                FailLocked($"inflate: pages of {r} are already in the balloon");
                return;
            }
        }

        long pages = 0;
        long skipped = 0;
        foreach (var r in _scratch)
        {
            _held.SetRange(r.First, r.Count);
            _ram.Discard(r.First, r.Count); // one madvise per merged range
            pages += r.Count;
            if (_bitmap is not null && _skipping)
            {
                skipped += _bitmap.Skip(r.First, r.Count);
            }
        }

        _migration = _migration with
        {
            PagesSkipped = _migration.PagesSkipped + skipped,
            InflatedDuringMigration = _migration.InflatedDuringMigration + pages,
        };
        _stats = _stats with { PagesInflated = _stats.PagesInflated + pages };
    }

    private void Deflate(byte[] buffer)
    {
        _stats = _stats with { DeflateRequests = _stats.DeflateRequests + 1 };
        if (BalloonWire.Decode(Encoding, buffer, BalloonVq.Deflate, RamPages, _scratch) is string error)
        {
            FailLocked($"deflate: {error}");
            return;
        }

        // B6: what goes back of a request the balloon does not wholly hold is the defences' call.
        PageRange? notHeld = null;
        foreach (var r in _scratch)
        {
            if (_held.CountRange(r.First, r.Count) != r.Count)
            {
                notHeld = r;
                break;
            }
        }

        long pages = 0;
        foreach (var r in _defences.Returned(_scratch, r => _held.CountRange(r.First, r.Count)).ToList())
        {
            long held = _held.ClearRange(r.First, r.Count);
            if (held != 0)
            {
                _ram.WillNeed(r.First, r.Count);
                pages += held;
            }
        }

        if (notHeld is { } bad)
        {
            FailLocked($"deflate: pages of {bad} are not in the balloon" +
                (pages == 0 ? string.Empty : $"; the {pages} held pages it names are returned"));
        }

        _migration = _migration with { DeflatedDuringMigration = _migration.DeflatedDuringMigration + pages };
        _stats = _stats with { PagesDeflated = _stats.PagesDeflated + pages };
    }

    /// <summary>
    /// The host's policy for guest events: pressure of medium or worse, or a puff failure, lowers the target to what
    /// the guest holds (stop inflating); during a migration it also refuses to inflate further until it ends.
    /// </summary>
    private void GuestEvent(byte[] buffer)
    {
        if (BalloonEventWire.Decode(buffer, out var type, out uint value) is string error)
        {
            FailLocked($"events: {error}");
            return;
        }

        _migration = _migration with { GuestEvents = _migration.GuestEvents + 1 };
        _stats = _stats with { GuestEvents = _stats.GuestEvents + 1 };
        var level = type == BalloonGuestEvent.Pressure ? (MemoryPressure)value : MemoryPressure.None;
        _pending.Add(Notification(type == BalloonGuestEvent.Pressure
            ? BalloonNotificationKind.Pressure
            : BalloonNotificationKind.PuffFailure, level));
        if (type == BalloonGuestEvent.PuffFailure || level >= MemoryPressure.Medium)
        {
            _pressureDuringMigration |= _bitmap is not null;
            if (TargetPages > ActualPages)
            {
                ChangeTargetLocked(ActualPages);
            }
        }
    }
}
