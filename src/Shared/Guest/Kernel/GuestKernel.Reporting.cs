using Migration.Shared.Concurrency;

namespace Migration.Shared.Guest.Kernel;

/// <summary>
/// The allocator's side of free page reporting (Linux's <c>mm/page_reporting.c</c> hooks): isolating unreported free
/// blocks of an order, and putting them back flagged Reported at the tail of their list once the device has them.
/// </summary>
/// <remarks>
/// Every free list keeps the order Linux relies on: unreported blocks first (frees push at the head), reported blocks
/// after them (putbacks append at the tail). A reporting pass therefore walks from the head and stops at the first
/// reported block, and the allocator, taking from the head, reuses memory the host still backs before memory it may
/// have discarded.
/// </remarks>
public sealed partial class GuestKernel
{
    /// <summary>Free pages in blocks flagged Reported (the host may have discarded them).</summary>
    public long ReportedPages => (long)_memory.ReadUInt64(HReportedPages);

    /// <summary>Whether the head of the free list of <paramref name="order"/> is a block not yet reported.</summary>
    public bool HasUnreported(int order)
    {
        CheckOrder(order);
        lock (_zoneLock)
        {
            using var noYield = SchedulingPoints.NoYield();
            uint head = FreeHead(order);
            return head != PageDescriptor.NoPage && (ReadDescriptor(head).Flags & PageFlags.Reported) == 0;
        }
    }

    /// <summary>
    /// Takes up to <paramref name="max"/> unreported free blocks of <paramref name="order"/> off their free list, as
    /// long as at least <paramref name="keepFreePages"/> pages stay free, and records them as isolated
    /// (<see cref="PageOwner.Reporting"/>): nobody allocates them until <see cref="PutBackReported"/>. Appends their
    /// heads to <paramref name="into"/> and returns how many it took.
    /// </summary>
    public int IsolateForReporting(int order, int max, long keepFreePages, List<long> into)
    {
        CheckOrder(order);
        ArgumentNullException.ThrowIfNull(into);
        long size = 1L << order;
        int taken = 0;
        lock (_zoneLock)
        {
            using var noYield = SchedulingPoints.NoYield(); // no scheduling point while holding the zone lock
            while (taken < max && FreePages - size >= keepFreePages)
            {
                uint head = FreeHead(order);
                if (head == PageDescriptor.NoPage)
                {
                    break;
                }

                var d = ReadDescriptor(head);
                if ((d.Flags & PageFlags.Reported) != 0)
                {
                    break; // the rest of the list is reported already
                }

                RemoveFromFreeList(head, order);
                WriteDescriptor(head, PageState.AllocatedHead, (byte)order, PageFlags.None, PageOwner.Reporting,
                    PageDescriptor.NoPage, PageDescriptor.NoPage, d.Generation);
                AddToHeader64(HFreePages, -size);
                AddToHeader64(HOwnerPages + ((int)PageOwner.Reporting * 8), size);
                into.Add(head);
                taken++;
            }
        }

        return taken;
    }

    /// <summary>
    /// Returns an isolated block to the allocator. <paramref name="reported"/>: the device acknowledged it, so it goes
    /// to the tail of its list flagged Reported, unless it merges with a free buddy (the merged block is new to the
    /// device, as in Linux, and goes to the head unflagged). Otherwise (the report never reached the device) it is
    /// freed as any block is.
    /// </summary>
    /// <remarks>No poison fill: the block's pages were poisoned when they were freed, and the host never discards
    /// them when the poison value is not zero.</remarks>
    public void PutBackReported(long pfn, int order, bool reported)
    {
        CheckOrder(order);
        _memory.Ram.CheckPage(pfn);
        lock (_zoneLock)
        {
            using var noYield = SchedulingPoints.NoYield(); // no scheduling point while holding the zone lock
            var d = ReadDescriptor(pfn);
            if (d.State != PageState.AllocatedHead || d.Owner != PageOwner.Reporting || d.Order != order)
            {
                throw new GuestKernelException(
                    $"page {pfn}: put back from reporting as order {order}, but it is {d.State} order {d.Order} " +
                    $"owned by {d.Owner}.", pfn);
            }

            long size = 1L << order;
            AddToHeader64(HFreePages, size);
            AddToHeader64(HOwnerPages + ((int)PageOwner.Reporting * 8), -size);
            if (reported && !HasFreeBuddy(pfn, order))
            {
                PushFreeReported(pfn, order);
            }
            else
            {
                MergeAndPush(pfn, order);
            }
        }
    }

    /// <summary>
    /// Whether the guest's own descriptors record <paramref name="pfn"/> as the head of a block of
    /// <paramref name="order"/> isolated for reporting. Lock-free: the device's sanity check of a report reads guest
    /// memory as a host would, without the guest's zone lock; an isolated block does not change until put back.
    /// </summary>
    public bool IsIsolatedForReporting(long pfn, int order)
    {
        if ((ulong)pfn >= (ulong)Layout.PageCount)
        {
            return false;
        }

        var d = ReadDescriptor(pfn);
        return d.State == PageState.AllocatedHead && d.Owner == PageOwner.Reporting && d.Order == order;
    }

    /// <summary>
    /// Whether the guest's own descriptors record a free block of <paramref name="order"/> at <paramref name="pfn"/>:
    /// isolated for reporting, or on a free list. What the device checks a report against (lock-free, as
    /// <see cref="IsIsolatedForReporting"/>).
    /// </summary>
    public bool IsFreeBlock(long pfn, int order)
    {
        if ((ulong)pfn >= (ulong)Layout.PageCount)
        {
            return false;
        }

        var d = ReadDescriptor(pfn);
        bool isolated = d.State == PageState.AllocatedHead && d.Owner == PageOwner.Reporting;
        return d.Order == order && (d.State == PageState.FreeHead || isolated);
    }

    /// <summary>The isolated blocks as (head, order), in page order (a restored guest's driver returns them).</summary>
    public List<(long Pfn, int Order)> IsolatedForReporting() => BlocksWithOrderOwnedBy(PageOwner.Reporting);

    private bool HasFreeBuddy(long pfn, int order)
    {
        if (order >= MaxOrder)
        {
            return false;
        }

        long buddy = pfn ^ (1L << order);
        if (buddy + (1L << order) > Layout.PageCount)
        {
            return false;
        }

        var b = ReadDescriptor(buddy);
        return b.State == PageState.FreeHead && b.Order == order;
    }
}
