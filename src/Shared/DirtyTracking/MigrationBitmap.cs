using Migration.Shared.Concurrency;

namespace Migration.Shared.DirtyTracking;

/// <summary>
/// The pages one migration still has to send, the lock that serialises everything touching them (QEMU's
/// <c>bitmap_mutex</c>: syncs, the send path and hint application), and the dirty log it syncs from.
/// </summary>
public sealed class MigrationBitmap
{
    private readonly object _gate = new();
    private readonly SchedulingPoints _scheduling;

    public MigrationBitmap(DirtyLog log, SchedulingPoints? scheduling = null)
    {
        ArgumentNullException.ThrowIfNull(log);
        Log = log;
        Pages = new PageBitmap(log.PageCount);
        _scheduling = scheduling ?? SchedulingPoints.None;
    }

    public DirtyLog Log { get; }

    /// <summary>The scheduling points the bitmap's lock yields at (none in production).</summary>
    internal SchedulingPoints Scheduling => _scheduling;

    /// <summary>The bits; touch them only inside <see cref="Lock"/>.</summary>
    public PageBitmap Pages { get; }

    /// <summary>Pages still to send.</summary>
    public long Remaining
    {
        get
        {
            using (Lock())
            {
                return Pages.Count;
            }
        }
    }

    /// <summary>Takes the bitmap lock (scheduler-aware under the race fuzzer).</summary>
    public SchedulingPoints.LockScope Lock() => _scheduling.Lock(_gate);

    /// <summary>Marks every page to send (the start of round 0).</summary>
    public void SetAll()
    {
        using (Lock())
        {
            Pages.SetAll();
        }
    }

    /// <summary>
    /// Moves the dirty log into the bitmap (<see cref="DirtyLog.SyncInto"/>); returns the pages it reported.
    /// </summary>
    public long SyncFromLog()
    {
        using (Lock())
        {
            return Log.SyncInto(Pages);
        }
    }

    /// <summary>
    /// Takes [<paramref name="first"/>, +<paramref name="count"/>) out of the bitmap unsent: pages a free-page hint,
    /// the balloon or free page reporting vouches for. Returns how many were still to send. Under the bitmap lock, and
    /// in manual mode the dirty-log chunks covering the range are re-armed first, or its pages, un-armed since the
    /// last sync, come back at the next one although nobody wrote them (R6; QEMU commit 3143577d). The write log
    /// itself is left alone: a write after the sync that re-armed a page is logged there and must reach the next sync
    /// (R4).
    /// </summary>
    public long Skip(long first, long count)
    {
        using (Lock())
        {
            if (Log.Mode == DirtyLogMode.Manual)
            {
                Log.ClearChunksCovering(first, count);
            }

            return Pages.ClearRange(first, count);
        }
    }

    /// <summary>
    /// Takes page <paramref name="pfn"/> out of the bitmap to send now, as <see cref="TakeBatch"/> would (its chunk
    /// re-armed first in manual mode); false when it was not there to take (already sent, or never to send). For a page
    /// asked for by name: postcopy's answers to the target's faults.
    /// </summary>
    public bool TakePage(long pfn)
    {
        using (Lock())
        {
            if (!Pages.Get(pfn))
            {
                return false;
            }

            Log.ClearChunkContaining(pfn);
            Pages.Clear(pfn);
            return true;
        }
    }

    /// <summary>
    /// Takes up to <c>pfns.Length</c> pages to send, from <paramref name="cursor"/> on, out of the bitmap; returns
    /// how many, and moves the cursor past them (-1 once the bitmap holds nothing further). In manual mode each page's
    /// chunk is re-armed before the page leaves the bitmap: writes made since the sync are not logged until then, and
    /// the sender reads the page only after this returns.
    /// </summary>
    public int TakeBatch(Span<long> pfns, ref long cursor)
    {
        if (cursor < 0)
        {
            return 0;
        }

        int count = 0;
        using (Lock())
        {
            long pfn = Pages.FindNextSet(cursor);
            while (pfn >= 0 && count < pfns.Length)
            {
                Log.ClearChunkContaining(pfn);
                Pages.Clear(pfn);
                pfns[count++] = pfn;
                pfn = Pages.FindNextSet(pfn + 1);
            }

            cursor = pfn;
        }

        return count;
    }
}
