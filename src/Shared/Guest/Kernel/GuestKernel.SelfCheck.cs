using Migration.Shared.Concurrency;
namespace Migration.Shared.Guest.Kernel;

/// <summary>What the guest's self-check found. <see cref="Ok"/> only when there are no findings.</summary>
public sealed record SelfCheckResult(IReadOnlyList<string> Findings, long FindingCount, long PagesChecked,
    long FreePagesFound, long StampedPagesChecked)
{
    /// <summary>Findings kept in full; the rest are only counted, so a wrecked guest cannot flood a report.</summary>
    public const int MaxFindingsKept = 100;

    public bool Ok => FindingCount == 0;

    public override string ToString() => Ok
        ? $"ok ({PagesChecked} pages, {FreePagesFound} free, {StampedPagesChecked} stamps checked)"
        : $"{FindingCount} finding(s), first: {Findings[0]}";
}

public sealed partial class GuestKernel
{
    /// <summary>
    /// Walks the descriptor array and every free list and checks them against each other and the header counters;
    /// checks each stamped page's identity, and (poisoning on) that every free page still holds the poison pattern.
    /// Run it with the vCPUs paused: it reads a snapshot and takes the zone lock only against allocator calls.
    /// </summary>
    public SelfCheckResult SelfCheck()
    {
        lock (_zoneLock)
        {
            using var noYield = SchedulingPoints.NoYield(); // no scheduling point while holding the zone lock
            return new SelfCheckWalk(this).Run();
        }
    }

    private sealed class SelfCheckWalk(GuestKernel kernel)
    {
        private readonly List<string> _findings = [];
        private readonly long[] _freeBlocksSeen = new long[OrderCount];
        private readonly (long First, long Count)[] _extents = [.. kernel.Layout.ManagedExtents()];
        private long _findingCount;
        private long _freePages;
        private long _reportedPagesSeen;
        private long _stamped;

        private KernelLayout Layout => kernel.Layout;

        public SelfCheckResult Run()
        {
            WalkDescriptors();
            WalkFreeLists();
            long headerFree = kernel.FreePages;
            if (headerFree != _freePages)
            {
                Report($"page 0: header counts {headerFree} free pages, the descriptors describe {_freePages}.");
            }

            if (kernel.ReportedPages != _reportedPagesSeen)
            {
                Report($"page 0: header counts {kernel.ReportedPages} reported free pages, the free lists hold " +
                    $"{_reportedPagesSeen}.");
            }

            return new SelfCheckResult(_findings, _findingCount, Layout.PageCount, _freePages, _stamped);
        }

        private void WalkDescriptors()
        {
            bool poison = kernel.PoisonEnabled;
            byte poisonValue = kernel.PoisonValue;
            long pfn = 0;
            while (pfn < Layout.PageCount)
            {
                var d = kernel.ReadDescriptor(pfn);
                if (Layout.IsKernelPage(pfn))
                {
                    if (d.State != PageState.Kernel)
                    {
                        Report($"page {pfn}: kernel page has state {d.State}.");
                    }
                    pfn++;
                    continue;
                }

                if (Layout.IsReservedPage(pfn))
                {
                    if (d.State != PageState.Reserved)
                    {
                        Report($"page {pfn}: reserved page has state {d.State}.");
                    }
                    pfn++;
                    continue;
                }

                if (d.State is not (PageState.FreeHead or PageState.AllocatedHead))
                {
                    Report($"page {pfn}: expected the head of a block, found {d.State}.");
                    pfn++;
                    continue;
                }

                long size = 1L << Math.Min((int)d.Order, MaxOrder);
                if (d.Order > MaxOrder || (pfn & (size - 1)) != 0 || !BlockIsManaged(pfn, size))
                {
                    Report($"page {pfn}: block of order {d.Order} is misaligned or leaves managed memory.");
                    pfn++;
                    continue;
                }

                for (long t = pfn + 1; t < pfn + size; t++)
                {
                    var td = kernel.ReadDescriptor(t);
                    if (td.State != PageState.Tail)
                    {
                        Report($"page {t}: inside the order-{d.Order} block at {pfn} but has state {td.State}.");
                    }
                }

                if (d.State == PageState.FreeHead)
                {
                    _freeBlocksSeen[d.Order]++;
                    _freePages += size;
                    if (poison)
                    {
                        CheckPoisoned(pfn, size, poisonValue);
                    }
                }
                else if ((d.Flags & PageFlags.Stamped) != 0)
                {
                    for (long p = pfn; p < pfn + size; p++)
                    {
                        var stamp = PageStamp.Read(kernel._memory, p);
                        _stamped++;
                        if (!stamp.Matches(p, d.Generation))
                        {
                            Report(stamp.Magic != PageStamp.ExpectedMagic
                                ? $"page {p}: stamp missing (magic 0x{stamp.Magic:x8}) " +
                                    $"in a stamped block allocated at generation {d.Generation}."
                                : $"page {p}: holds page {stamp.Pfn} generation {stamp.Generation}, " +
                                    $"expected generation {d.Generation} of itself.");
                        }
                    }
                }

                pfn += size;
            }
        }

        private void WalkFreeLists()
        {
            long maxSteps = Layout.PageCount + 1;
            for (int order = 0; order <= MaxOrder; order++)
            {
                long count = 0;
                bool broken = false;
                bool reportedSeen = false;
                uint prev = PageDescriptor.NoPage;
                uint node = kernel.FreeHead(order);
                while (node != PageDescriptor.NoPage)
                {
                    if (node >= Layout.PageCount)
                    {
                        Report($"free list {order}: link to page {node}, outside RAM (after page {prev}).");
                        broken = true;
                        break;
                    }

                    if (++count > maxSteps)
                    {
                        Report($"free list {order}: cycle detected at page {node}.");
                        broken = true;
                        break;
                    }

                    var d = kernel.ReadDescriptor(node);
                    if (d.State != PageState.FreeHead || d.Order != order)
                    {
                        Report($"page {node}: on free list {order} but its descriptor says {d.State} order {d.Order}.");
                        broken = true;
                        break;
                    }

                    bool reported = (d.Flags & PageFlags.Reported) != 0;
                    if (reported)
                    {
                        _reportedPagesSeen += 1L << order;
                    }
                    else if (reportedSeen)
                    {
                        Report($"page {node}: unreported block after a reported one on free list {order}.");
                    }

                    reportedSeen |= reported;

                    if (d.Prev != prev)
                    {
                        Report($"page {node}: free list {order} back link is {FormatLink(d.Prev)}, " +
                            $"expected {FormatLink(prev)}.");
                    }
                    prev = node;
                    node = d.Next;
                }

                if (!broken && prev != kernel.FreeTail(order))
                {
                    Report($"free list {order}: ends at {FormatLink(prev)}, header tail is " +
                        $"{FormatLink(kernel.FreeTail(order))}.");
                }

                long header = kernel.FreeBlocks(order);
                if (count != header)
                {
                    Report($"free list {order}: {count} blocks linked, header counts {header}.");
                }

                if (count != _freeBlocksSeen[order])
                {
                    Report($"free list {order}: {count} blocks linked, " +
                        $"descriptors mark {_freeBlocksSeen[order]} free blocks of that order.");
                }
            }
        }

        private void CheckPoisoned(long pfn, long pages, byte value)
        {
            for (long p = pfn; p < pfn + pages; p++)
            {
                ReadOnlySpan<byte> page = kernel._memory.ReadPage(p);
                int at = page.IndexOfAnyExcept(value);
                if (at >= 0)
                {
                    Report($"page {p}: free but not poisoned " +
                        $"(offset {at} holds 0x{page[at]:x2}, poison is 0x{value:x2}).");
                }
            }
        }

        private bool BlockIsManaged(long pfn, long size)
        {
            if (pfn + size > Layout.PageCount)
            {
                return false;
            }

            foreach (var (first, count) in _extents)
            {
                if (pfn >= first && pfn + size <= first + count)
                {
                    return true;
                }
            }

            return false;
        }

        private static string FormatLink(uint link) =>
            link == PageDescriptor.NoPage ? "none" : link.ToString(System.Globalization.CultureInfo.InvariantCulture);

        private void Report(string finding)
        {
            _findingCount++;
            if (_findings.Count < SelfCheckResult.MaxFindingsKept)
            {
                _findings.Add(finding);
            }
        }
    }
}
