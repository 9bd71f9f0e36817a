using Migration.Shared.DirtyTracking;

namespace Migration.Shared.Precopy;

/// <summary>
/// The source's order of pages in postcopy, over the pages it still has to send (the bitmap after the final sync,
/// the guest stopped). A background push walks them from a cursor; a page the target asks for jumps the queue, and
/// the cursor moves to just past it, since the guest's next faults are likely near its last (QEMU's postcopy does the
/// same). The push wraps around to the start until nothing is left.
/// </summary>
internal sealed class PostcopyPush(MigrationBitmap pages)
{
    private readonly object _gate = new();
    private long _cursor; // under _gate

    /// <summary>Pages not yet taken by the push or an answer.</summary>
    public long Remaining => pages.Remaining;

    /// <summary>Takes up to <c>pfns.Length</c> pages for the push, from the cursor on; 0 once none is left.</summary>
    public int TakeBatch(Span<long> pfns)
    {
        lock (_gate)
        {
            long cursor = _cursor;
            int n = pages.TakeBatch(pfns, ref cursor);
            if (n == 0 && _cursor > 0)
            {
                cursor = 0; // the end reached from a jump: what is left lies before it
                n = pages.TakeBatch(pfns, ref cursor);
            }

            _cursor = Math.Max(cursor, 0);
            return n;
        }
    }

    /// <summary>
    /// A page the target asked for: taken out of what the push still sends, and the push moved to just past it.
    /// True when it was still to send; false when the push or an earlier answer already took it (the answer goes
    /// anyway: the stopped guest's bytes are the same, and the target places a page once).
    /// </summary>
    public bool TakeRequested(long pfn)
    {
        bool wasToSend = pages.TakePage(pfn);
        lock (_gate)
        {
            _cursor = pfn + 1 < pages.Pages.PageCount ? pfn + 1 : 0;
        }

        return wasToSend;
    }
}
