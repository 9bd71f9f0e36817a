using Migration.Shared.Concurrency;

namespace Migration.Shared.Guest.Kernel;

/// <summary>How hard an allocation had to work (Linux's vmpressure levels, simplified).</summary>
public enum MemoryPressure
{
    None = 0,
    /// <summary>An allocation took back free memory lent to hinting (the shrinker gave blocks back).</summary>
    Low = 1,

    /// <summary>An allocation needed reclaim of memory in use (not raised by the in-RAM kernel, which has none).</summary>
    Medium = 2,

    /// <summary>An allocation needed the OOM path, or failed.</summary>
    Critical = 3,
}

/// <summary>Boot parameters of the guest kernel.</summary>
public sealed record KernelBootOptions
{
    /// <summary>
    /// Byte written over freed pages and checked on allocation (Linux <c>page_poison</c>); null turns it off.
    /// </summary>
    public byte? PoisonValue { get; init; }

    /// <summary>
    /// Zero every block the allocator hands out, through the guest write path (Linux's <c>init_on_alloc=1</c>, Debian's
    /// default): an allocation then dirties its pages, and a discarded page it takes becomes backed again.
    /// </summary>
    public bool InitOnAlloc { get; init; }

    /// <summary>First page of a range kept from the allocator (0 pages = none).</summary>
    public long ReservedFirstPfn { get; init; }

    public long ReservedPages { get; init; }
}

/// <summary>
/// A small guest kernel whose whole state lives in guest RAM: a header page, a page-descriptor array and a buddy
/// allocator (orders 0..10) whose free lists and counters are descriptor links and header fields. Every change goes
/// through the guest write path, so allocation and free dirty pages as a real kernel's do, and a target can resume the
/// kernel from the RAM that arrived (<see cref="Attach"/>).
/// </summary>
/// <remarks>
/// One zone lock serialises allocator changes (the zone spinlock). The lock itself is host state and is never held
/// across a vCPU pause, so it does not need to migrate.
/// </remarks>
public sealed partial class GuestKernel
{
    /// <summary>Largest buddy order: 2^10 pages = 4 MiB, the block size free page hinting reports.</summary>
    public const int MaxOrder = 10;

    public const int OrderCount = MaxOrder + 1;

    private const ulong Magic = 0x314C454E52454B47; // "GKERNEL1"

    // Header page field offsets (page 0).
    private const int HMagic = 0;
    private const int HPageCount = 8;
    private const int HDescriptorFirst = 16;
    private const int HDescriptorPages = 24;
    private const int HReservedFirst = 32;
    private const int HReservedPages = 40;
    private const int HPoisonEnabled = 48;
    private const int HPoisonValue = 49;
    private const int HInitOnAlloc = 50;
    private const int HFreePages = 56;
    private const int HGeneration = 64;
    private const int HAllocations = 72;
    private const int HFrees = 80;
    private const int HPoisonViolations = 88;
    private const int HFreeHeads = 128;   // u32 x 11
    private const int HFreeBlocks = 192;  // u64 x 11
    private const int HOwnerPages = 320;  // u64 x 8: allocated pages by PageOwner
    private const int HAllocStalls = 384; // allocations that had to reclaim first (Linux's allocstall)
    private const int HDirectReclaimed = 392; // pages the slow path got back from the shrinker
    private const int HOomKills = 400;    // allocations that failed after every fallback (Linux would kill a task)
    private const int HFaultedPages = 408; // pages allocated for workload data (each a first-touch minor fault)
    private const int HFreeTails = 416;   // u32 x 11: last block of each free list (reported blocks go there)
    private const int HReportedPages = 464; // free pages in blocks flagged Reported

    /// <summary>
    /// Bytes of the header page from here on are free for other kernel subsystems (the balloon driver).
    /// </summary>
    public const int HeaderSubsystemOffset = 512;

    private readonly GuestMemory _memory;
    private readonly Lock _zoneLock = new();
    private readonly List<PoisonViolation> _poisonViolations = [];

    private GuestKernel(GuestMemory memory, KernelLayout layout)
    {
        _memory = memory;
        Layout = layout;
    }

    public KernelLayout Layout { get; }

    public GuestMemory Memory => _memory;

    public bool PoisonEnabled => _memory.ReadByte(HPoisonEnabled) != 0;

    public byte PoisonValue => _memory.ReadByte(HPoisonValue);

    /// <summary>Whether allocations zero their blocks (<see cref="KernelBootOptions.InitOnAlloc"/>).</summary>
    public bool InitOnAlloc => _memory.ReadByte(HInitOnAlloc) != 0;

    /// <summary>Free pages as the kernel's own counter has them.</summary>
    public long FreePages => (long)_memory.ReadUInt64(HFreePages);

    public long ManagedPages => Layout.ManagedExtents().Sum(e => e.Count);

    public long Allocations => (long)_memory.ReadUInt64(HAllocations);

    public long Frees => (long)_memory.ReadUInt64(HFrees);

    /// <summary>Poison violations seen by allocations on this host since boot or attach.</summary>
    public IReadOnlyList<PoisonViolation> PoisonViolations
    {
        get
        {
            lock (_zoneLock)
            {
                using var noYield = SchedulingPoints.NoYield(); // no scheduling point while holding the zone lock
                return [.. _poisonViolations];
            }
        }
    }

    /// <summary>Number of poison violations recorded in the guest (survives migration).</summary>
    public long PoisonViolationCount => (long)_memory.ReadUInt64(HPoisonViolations);

    /// <summary>
    /// Boots a kernel into zeroed RAM: writes the header and descriptors and puts every managed page on the free lists
    /// (poisoned first when poisoning is on).
    /// </summary>
    public static GuestKernel Boot(GuestMemory memory, KernelBootOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        options ??= new KernelBootOptions();
        var layout = KernelLayout.Compute(memory.PageCount, options.ReservedFirstPfn, options.ReservedPages);
        var kernel = new GuestKernel(memory, layout);
        kernel.FormatHeader(options);
        kernel.PopulateFreeLists(options.PoisonValue);
        return kernel;
    }

    /// <summary>
    /// Re-attaches to a kernel already in RAM (the target after migration). Checks the header; deeper damage is the
    /// self-check's job.
    /// </summary>
    public static GuestKernel Attach(GuestMemory memory)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ulong magic = memory.ReadUInt64(HMagic);
        if (magic != Magic)
        {
            throw new GuestKernelException(
                $"page 0: no guest kernel header (magic 0x{magic:x16}, expected 0x{Magic:x16}).", 0);
        }

        long pageCount = (long)memory.ReadUInt64(HPageCount);
        if (pageCount != memory.PageCount)
        {
            throw new GuestKernelException($"page 0: header says {pageCount} pages, RAM has {memory.PageCount}.", 0);
        }

        var layout = KernelLayout.Compute(pageCount, (long)memory.ReadUInt64(HReservedFirst),
            (long)memory.ReadUInt64(HReservedPages));
        if (layout.DescriptorFirstPfn != (long)memory.ReadUInt64(HDescriptorFirst)
            || layout.DescriptorPages != (long)memory.ReadUInt64(HDescriptorPages))
        {
            throw new GuestKernelException(
                "page 0: descriptor array location in the header does not match the layout.", 0);
        }

        return new GuestKernel(memory, layout);
    }

    /// <summary>Allocates a 2^order-page block, or returns -1 when no block of that order or larger is free.</summary>
    /// <param name="order">0..10.</param>
    /// <param name="owner">Recorded in the head descriptor.</param>
    /// <param name="stamp">Write a <see cref="PageStamp"/> into every page of the block (workload data).</param>
    public long TryAllocate(int order, PageOwner owner, bool stamp = false)
    {
        long pfn = TryAllocateOnce(order, owner, stamp);
        // The hint driver's own allocations never shrink or deflate anything: they fail, and it retries later.
        if (pfn >= 0 || owner is PageOwner.Balloon)
        {
            return pfn;
        }

        // Let the shrinker (the hint driver's held blocks: free memory lent to hinting) give memory back, then try
        // once more. That is low pressure at most: nothing the guest uses was reclaimed. An inflating balloon may take
        // those blocks too (as Linux's inflate reclaims hinted pages), but never deflates itself or reports pressure.
        bool inflating = owner is PageOwner.BalloonInflated;
        if (!inflating)
        {
            Count(HAllocStalls, 1);
        }

        long before = FreePages;
        if (Shrinker is { } shrink && shrink(order))
        {
            Count(HDirectReclaimed, Math.Max(0, FreePages - before));
            if (!inflating)
            {
                Pressure?.Invoke(MemoryPressure.Low);
            }

            pfn = TryAllocateOnce(order, owner, stamp);
        }

        if (pfn >= 0 || inflating)
        {
            return pfn;
        }

        while (pfn < 0 && OomNotifier is { } oom && oom(order))
        {
            Pressure?.Invoke(MemoryPressure.Critical);
            pfn = TryAllocateOnce(order, owner, stamp);
        }

        if (pfn < 0)
        {
            Count(HOomKills, 1);
            Pressure?.Invoke(MemoryPressure.Critical);
        }

        return pfn;
    }

    /// <summary>
    /// Called when an allocation still fails after the shrinker, outside the zone lock, with the order wanted; returns
    /// whether it freed anything, and is called again until it frees nothing or the allocation succeeds (Linux's OOM
    /// notifier chain, where the balloon's deflate-on-OOM sits).
    /// </summary>
    public Func<int, bool>? OomNotifier { get; set; }

    /// <summary>
    /// Told when an allocation took hint blocks back through the shrinker (low) or needed the OOM path or failed
    /// (critical), outside the zone lock: the in-RAM kernel's vmpressure. The balloon's own inflates never report.
    /// </summary>
    public Action<MemoryPressure>? Pressure { get; set; }

    /// <summary>
    /// Splits the allocated block at <paramref name="pfn"/> of <paramref name="order"/> into two allocated halves of
    /// order - 1 with the same owner (the balloon deflating part of a block). Returns the upper half's head.
    /// </summary>
    public long SplitAllocated(long pfn, int order)
    {
        CheckOrder(order);
        if (order == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(order), order, "An order-0 block cannot be split.");
        }

        _memory.Ram.CheckPage(pfn);
        lock (_zoneLock)
        {
            using var noYield = SchedulingPoints.NoYield(); // no scheduling point while holding the zone lock
            var d = ReadDescriptor(pfn);
            if (d.State != PageState.AllocatedHead || d.Order != order)
            {
                throw new GuestKernelException(
                    $"page {pfn}: split as an allocated block of order {order}, but it is {d.State} order {d.Order}.",
                    pfn);
            }

            long upper = pfn + (1L << (order - 1));
            WriteDescriptor(pfn, PageState.AllocatedHead, (byte)(order - 1), d.Flags, d.Owner,
                PageDescriptor.NoPage, PageDescriptor.NoPage, d.Generation);
            WriteDescriptor(upper, PageState.AllocatedHead, (byte)(order - 1), d.Flags, d.Owner,
                PageDescriptor.NoPage, PageDescriptor.NoPage, d.Generation);
            AddToHeader64(HAllocations, 1);
            return upper;
        }
    }

    /// <summary>
    /// Called when an allocation fails, outside the zone lock, with the order wanted; returns whether it freed
    /// anything (Linux's shrinker interface, used by the balloon driver to hand back held blocks).
    /// </summary>
    public Func<int, bool>? Shrinker { get; set; }

    private long TryAllocateOnce(int order, PageOwner owner, bool stamp)
    {
        CheckOrder(order);
        long pfn;
        uint generation;
        lock (_zoneLock)
        {
            using var noYield = SchedulingPoints.NoYield(); // no scheduling point while holding the zone lock
            int from = order;
            while (from <= MaxOrder && FreeHead(from) == PageDescriptor.NoPage)
            {
                from++;
            }

            if (from > MaxOrder)
            {
                return -1;
            }

            pfn = FreeHead(from);
            RemoveFromFreeList(pfn, from);

            // Split down to the requested order, returning the upper halves to the free lists.
            for (int k = from; k > order; k--)
            {
                long buddy = pfn + (1L << (k - 1));
                PushFree(buddy, k - 1);
            }

            generation = _memory.ReadUInt32(HGeneration) + 1;
            _memory.WriteUInt32(HGeneration, generation);
            WriteDescriptor(pfn, PageState.AllocatedHead, (byte)order, stamp ? PageFlags.Stamped : PageFlags.None,
                owner, PageDescriptor.NoPage, PageDescriptor.NoPage, generation);
            AddToHeader64(HFreePages, -(1L << order));
            AddToHeader64(HAllocations, 1);
            AddToHeader64(HOwnerPages + ((int)owner * 8), 1L << order);
            if (owner is PageOwner.Anonymous or PageOwner.PageCache)
            {
                AddToHeader64(HFaultedPages, 1L << order);
            }

            if (PoisonEnabled)
            {
                CheckPoison(pfn, 1L << order);
            }
        }

        if (InitOnAlloc)
        {
            _memory.FillPages(pfn, 1L << order, 0);
        }

        if (stamp)
        {
            for (long p = pfn; p < pfn + (1L << order); p++)
            {
                PageStamp.Write(_memory, p, generation);
            }
        }

        return pfn;
    }

    /// <summary>Allocates a block or throws <see cref="GuestOutOfMemoryException"/>.</summary>
    public long Allocate(int order, PageOwner owner, bool stamp = false)
    {
        long pfn = TryAllocate(order, owner, stamp);
        if (pfn < 0)
        {
            throw new GuestOutOfMemoryException(
                $"No free block of order {order} ({FreePages} pages free in smaller blocks).");
        }

        return pfn;
    }

    /// <summary>
    /// Frees the block at <paramref name="pfn"/> of <paramref name="order"/>, poisoning it when poisoning is on and
    /// merging it with free buddies. Throws <see cref="GuestKernelException"/> naming the page for a double free or a
    /// page that is not the head of an allocated block of that order.
    /// </summary>
    public void Free(long pfn, int order) => Free(pfn, order, initialise: true);

    /// <summary>
    /// <see cref="Free(long, int)"/>; <paramref name="initialise"/> false skips the poison fill, which only a broken
    /// balloon driver does (mutant R12).
    /// </summary>
    public void Free(long pfn, int order, bool initialise)
    {
        CheckOrder(order);
        _memory.Ram.CheckPage(pfn);
        int merged;
        lock (_zoneLock)
        {
            using var noYield = SchedulingPoints.NoYield(); // no scheduling point while holding the zone lock
            var d = ReadDescriptor(pfn);
            if (d.State == PageState.FreeHead)
            {
                throw new GuestKernelException(
                    $"page {pfn}: double free (block of order {d.Order} is already free).", pfn);
            }

            if (d.State != PageState.AllocatedHead)
            {
                throw new GuestKernelException(
                    $"page {pfn}: free of a page that is not an allocated block head (state {d.State}).", pfn);
            }

            if (d.Order != order)
            {
                throw new GuestKernelException(
                    $"page {pfn}: freed as order {order}, allocated as order {d.Order}.", pfn);
            }

            if (PoisonEnabled && initialise)
            {
                _memory.FillPages(pfn, 1L << order, PoisonValue);
            }

            AddToHeader64(HFrees, 1);
            AddToHeader64(HFreePages, 1L << order);
            AddToHeader64(HOwnerPages + ((int)d.Owner * 8), -(1L << order));
            merged = MergeAndPush(pfn, order);
        }

        BlockFreed?.Invoke(merged);
    }

    /// <summary>
    /// Told the order of the free block a <see cref="Free(long, int)"/> produced (after merging), outside the zone
    /// lock: free page reporting's notifier (Linux's <c>page_reporting_notify_free</c>). Must be cheap; a vCPU calls it.
    /// </summary>
    public Action<int>? BlockFreed { get; set; }

    /// <summary>
    /// The kernel's counters, as the balloon's statistics queue reports them: pages by owner and the slow path's
    /// events. They live in the header page, so they migrate with the guest.
    /// </summary>
    public KernelCounters Counters()
    {
        lock (_zoneLock)
        {
            using var noYield = SchedulingPoints.NoYield();
            long Owner(PageOwner o) => (long)_memory.ReadUInt64(HOwnerPages + ((int)o * 8));
            return new KernelCounters
            {
                FreePages = FreePages,
                ManagedPages = ManagedPages,
                PageCachePages = Owner(PageOwner.PageCache),
                InflatedPages = Owner(PageOwner.BalloonInflated),
                HintHeldPages = Owner(PageOwner.Balloon),
                FaultedPages = (long)_memory.ReadUInt64(HFaultedPages),
                AllocStalls = (long)_memory.ReadUInt64(HAllocStalls),
                DirectReclaimedPages = (long)_memory.ReadUInt64(HDirectReclaimed),
                OomKills = (long)_memory.ReadUInt64(HOomKills),
            };
        }
    }

    /// <summary>Adds to a header counter outside the allocation itself (under the zone lock).</summary>
    private void Count(int offset, long delta)
    {
        lock (_zoneLock)
        {
            using var noYield = SchedulingPoints.NoYield();
            AddToHeader64(offset, delta);
        }
    }

    /// <summary>Reads a page's descriptor.</summary>
    public PageDescriptor ReadDescriptor(long pfn)
    {
        _memory.Ram.CheckPage(pfn);
        long a = Layout.DescriptorAddress(pfn);
        return PageDescriptor.Decode(_memory.ReadUInt64(a), _memory.ReadUInt64(a + 8));
    }

    /// <summary>
    /// A bitmap of the pages the guest considers free (inside a free buddy block or a block the balloon holds), read
    /// from the descriptors. What is
    /// not free is what migration must deliver byte for byte. Call with the vCPUs paused.
    /// </summary>
    public DirtyTracking.PageBitmap FreePageMap()
    {
        lock (_zoneLock)
        {
            using var noYield = SchedulingPoints.NoYield(); // no scheduling point while holding the zone lock
            return FreePageMapOf(Layout.PageCount, ReadDescriptor);
        }
    }

    /// <summary>
    /// A copy of the descriptor array, the allocator's whole state, from which <see cref="DescriptorSnapshot.FreePageMap"/>
    /// gives what <see cref="FreePageMap"/> would have given at the time of the copy. Copying is a fraction of the walk
    /// (16 bytes a page), so a target takes it before the guest runs and walks it afterwards. Call with the vCPUs
    /// paused.
    /// </summary>
    /// <param name="into">Room made earlier (<see cref="DescriptorSnapshot.Allocate"/>), or null to make it now.</param>
    public DescriptorSnapshot SnapshotDescriptors(DescriptorSnapshot? into = null)
    {
        var snapshot = into ?? DescriptorSnapshot.Allocate(Layout.PageCount);
        if (snapshot.PageCount != Layout.PageCount)
        {
            throw new ArgumentException(
                $"a snapshot for {snapshot.PageCount} pages cannot hold a kernel of {Layout.PageCount}.", nameof(into));
        }

        lock (_zoneLock)
        {
            snapshot.CopyFrom(_memory.Ram, Layout.DescriptorFirstPfn);
        }

        return snapshot;
    }

    /// <summary>
    /// The free-page map from descriptors read through <paramref name="read"/>: a page is free inside a free buddy
    /// block or a block the balloon or free page reporting holds. The one walk both the live kernel and a snapshot use.
    /// </summary>
    internal static DirtyTracking.PageBitmap FreePageMapOf(long pageCount, Func<long, PageDescriptor> read)
    {
        var map = new DirtyTracking.PageBitmap(pageCount);
        long pfn = 0;
        while (pfn < pageCount)
        {
            var d = read(pfn);
            long size = d.State is PageState.FreeHead or PageState.AllocatedHead && d.Order <= MaxOrder
                ? 1L << d.Order
                : 1;
            // Blocks the balloon driver holds are free memory lent to the device: their content does not matter
            // (the driver initialises them when it gives them back), so migration neither sends nor checks them.
            // Pages inflated into the balloon are the host's: discarded, zero until deflated, never the guest's data.
            // Blocks isolated for free page reporting are free memory the device is looking at.
            bool free = d.State == PageState.FreeHead
                || (d.State == PageState.AllocatedHead
                    && d.Owner is PageOwner.Balloon or PageOwner.BalloonInflated or PageOwner.Reporting);
            if (free && pfn + size <= pageCount)
            {
                map.SetRange(pfn, size);
            }

            pfn += Math.Min(size, pageCount - pfn);
        }

        return map;
    }

    /// <summary>The allocated blocks recorded with <paramref name="owner"/> as (head, order), in page order.</summary>
    public List<(long Pfn, int Order)> BlocksWithOrderOwnedBy(PageOwner owner)
    {
        var blocks = new List<(long, int)>();
        WalkBlocks((pfn, d, _) =>
        {
            if (d.State == PageState.AllocatedHead && d.Owner == owner)
            {
                blocks.Add((pfn, d.Order));
            }
        });
        return blocks;
    }

    /// <summary>Head pages of the allocated blocks recorded with <paramref name="owner"/>, in page order.</summary>
    public List<long> BlocksOwnedBy(PageOwner owner)
    {
        var heads = new List<long>();
        WalkBlocks((pfn, d, _) =>
        {
            if (d.State == PageState.AllocatedHead && d.Owner == owner)
            {
                heads.Add(pfn);
            }
        });
        return heads;
    }

    /// <summary>
    /// Visits every block head (and any page that is not part of a block) in page order, with its descriptor and the
    /// number of pages it spans, under the zone lock.
    /// </summary>
    private void WalkBlocks(Action<long, PageDescriptor, long> visit)
    {
        lock (_zoneLock)
        {
            using var noYield = SchedulingPoints.NoYield(); // no scheduling point while holding the zone lock
            long pfn = 0;
            while (pfn < Layout.PageCount)
            {
                var d = ReadDescriptor(pfn);
                long size = d.State is PageState.FreeHead or PageState.AllocatedHead && d.Order <= MaxOrder
                    ? 1L << d.Order
                    : 1;
                visit(pfn, d, size);
                pfn += Math.Min(size, Layout.PageCount - pfn);
            }
        }
    }

    /// <summary>Number of free blocks of each order, from the header counters.</summary>
    public long FreeBlocks(int order)
    {
        CheckOrder(order);
        return (long)_memory.ReadUInt64(HFreeBlocks + (order * 8));
    }

    private void FormatHeader(KernelBootOptions options)
    {
        _memory.WriteUInt64(HPageCount, (ulong)Layout.PageCount);
        _memory.WriteUInt64(HDescriptorFirst, (ulong)Layout.DescriptorFirstPfn);
        _memory.WriteUInt64(HDescriptorPages, (ulong)Layout.DescriptorPages);
        _memory.WriteUInt64(HReservedFirst, (ulong)Layout.ReservedFirstPfn);
        _memory.WriteUInt64(HReservedPages, (ulong)Layout.ReservedPages);
        _memory.WriteByte(HPoisonEnabled, options.PoisonValue.HasValue ? (byte)1 : (byte)0);
        _memory.WriteByte(HPoisonValue, options.PoisonValue ?? 0);
        _memory.WriteByte(HInitOnAlloc, options.InitOnAlloc ? (byte)1 : (byte)0);
        for (int k = 0; k <= MaxOrder; k++)
        {
            _memory.WriteUInt32(HFreeHeads + (k * 4), PageDescriptor.NoPage);
            _memory.WriteUInt32(HFreeTails + (k * 4), PageDescriptor.NoPage);
        }

        WriteDescriptor(KernelLayout.HeaderPfn, PageState.Kernel, 0, PageFlags.None, PageOwner.KernelData,
            PageDescriptor.NoPage, PageDescriptor.NoPage, 0);
        for (long p = Layout.DescriptorFirstPfn; p < Layout.DescriptorFirstPfn + Layout.DescriptorPages; p++)
        {
            WriteDescriptor(p, PageState.Kernel, 0, PageFlags.None, PageOwner.KernelData,
                PageDescriptor.NoPage, PageDescriptor.NoPage, 0);
        }

        for (long p = Layout.ReservedFirstPfn; p < Layout.ReservedFirstPfn + Layout.ReservedPages; p++)
        {
            WriteDescriptor(p, PageState.Reserved, 0, PageFlags.None, PageOwner.None,
                PageDescriptor.NoPage, PageDescriptor.NoPage, 0);
        }

        // Written last: a half-formatted header never carries the magic.
        _memory.WriteUInt64(HMagic, Magic);
    }

    private void PopulateFreeLists(byte? poison)
    {
        lock (_zoneLock)
        {
            using var noYield = SchedulingPoints.NoYield(); // no scheduling point while holding the zone lock
            foreach (var (first, count) in Layout.ManagedExtents())
            {
                if (poison is byte value)
                {
                    _memory.FillPages(first, count, value);
                }

                // Greedy: the largest naturally aligned block that fits at each position.
                long pfn = first;
                long end = first + count;
                while (pfn < end)
                {
                    int order = MaxOrder;
                    while (order > 0 && ((pfn & ((1L << order) - 1)) != 0 || pfn + (1L << order) > end))
                    {
                        order--;
                    }

                    PushFree(pfn, order);
                    AddToHeader64(HFreePages, 1L << order);
                    pfn += 1L << order;
                }
            }

            // Boot-time pushes are appended in ascending order, but pushing is LIFO; that is fine, order within a list
            // carries no meaning beyond reuse preference.
        }
    }

    /// <summary>Merges the freed block with free buddies and pushes the result; returns the merged order.</summary>
    private int MergeAndPush(long pfn, int order)
    {
        while (order < MaxOrder)
        {
            long buddy = pfn ^ (1L << order);
            if (buddy + (1L << order) > Layout.PageCount)
            {
                break;
            }

            var b = ReadDescriptor(buddy);
            if (b.State != PageState.FreeHead || b.Order != order)
            {
                break;
            }

            RemoveFromFreeList(buddy, order);
            long merged = Math.Min(pfn, buddy);
            long absorbed = Math.Max(pfn, buddy);
            // The upper half's head becomes a tail of the merged block: keeps "every non-head page is Tail" true.
            WriteDescriptor(absorbed, PageState.Tail, 0, PageFlags.None, PageOwner.None,
                PageDescriptor.NoPage, PageDescriptor.NoPage, 0);
            pfn = merged;
            order++;
        }

        PushFree(pfn, order);
        return order;
    }

    private uint FreeHead(int order) => _memory.ReadUInt32(HFreeHeads + (order * 4));

    private void PushFree(long pfn, int order)
    {
        uint head = FreeHead(order);
        uint generation = ReadDescriptor(pfn).Generation;
        WriteDescriptor(pfn, PageState.FreeHead, (byte)order, PageFlags.None, PageOwner.None,
            head, PageDescriptor.NoPage, generation);
        if (head != PageDescriptor.NoPage)
        {
            _memory.WriteUInt32(Layout.DescriptorAddress(head) + PageDescriptor.PrevOffset, (uint)pfn);
        }
        else
        {
            _memory.WriteUInt32(HFreeTails + (order * 4), (uint)pfn);
        }

        _memory.WriteUInt32(HFreeHeads + (order * 4), (uint)pfn);
        AddToHeader64(HFreeBlocks + (order * 8), 1);
    }

    private uint FreeTail(int order) => _memory.ReadUInt32(HFreeTails + (order * 4));

    /// <summary>Appends a free block flagged Reported to the tail of its list (Linux's putback to the tail).</summary>
    private void PushFreeReported(long pfn, int order)
    {
        uint tail = FreeTail(order);
        uint generation = ReadDescriptor(pfn).Generation;
        WriteDescriptor(pfn, PageState.FreeHead, (byte)order, PageFlags.Reported, PageOwner.None,
            PageDescriptor.NoPage, tail, generation);
        if (tail != PageDescriptor.NoPage)
        {
            _memory.WriteUInt32(Layout.DescriptorAddress(tail) + PageDescriptor.NextOffset, (uint)pfn);
        }
        else
        {
            _memory.WriteUInt32(HFreeHeads + (order * 4), (uint)pfn);
        }

        _memory.WriteUInt32(HFreeTails + (order * 4), (uint)pfn);
        AddToHeader64(HFreeBlocks + (order * 8), 1);
        AddToHeader64(HReportedPages, 1L << order);
    }

    private void RemoveFromFreeList(long pfn, int order)
    {
        var d = ReadDescriptor(pfn);
        if (d.State != PageState.FreeHead || d.Order != order)
        {
            throw new GuestKernelException(
                $"page {pfn}: free list of order {order} links a page " +
                $"whose descriptor says {d.State} order {d.Order}.", pfn);
        }

        if (d.Prev == PageDescriptor.NoPage)
        {
            _memory.WriteUInt32(HFreeHeads + (order * 4), d.Next);
        }
        else
        {
            _memory.WriteUInt32(Layout.DescriptorAddress(d.Prev) + PageDescriptor.NextOffset, d.Next);
        }

        if (d.Next != PageDescriptor.NoPage)
        {
            _memory.WriteUInt32(Layout.DescriptorAddress(d.Next) + PageDescriptor.PrevOffset, d.Prev);
        }
        else
        {
            _memory.WriteUInt32(HFreeTails + (order * 4), d.Prev);
        }

        AddToHeader64(HFreeBlocks + (order * 8), -1);
        if ((d.Flags & PageFlags.Reported) != 0)
        {
            AddToHeader64(HReportedPages, -(1L << order)); // allocated or merged: no longer a reported block
        }
    }

    private void WriteDescriptor(long pfn, PageState state, byte order, PageFlags flags, PageOwner owner,
        uint next, uint prev, uint generation)
    {
        long a = Layout.DescriptorAddress(pfn);
        ulong lo = (byte)state | ((ulong)order << 8) | ((ulong)(byte)flags << 16) | ((ulong)(byte)owner << 24)
            | ((ulong)next << 32);
        ulong hi = prev | ((ulong)generation << 32);
        _memory.WriteUInt64(a, lo);
        _memory.WriteUInt64(a + 8, hi);
    }

    private void AddToHeader64(int offset, long delta) =>
        _memory.WriteUInt64(offset, (ulong)((long)_memory.ReadUInt64(offset) + delta));

    private unsafe void CheckPoison(long pfn, long pages)
    {
        byte expected = PoisonValue;
        for (long p = pfn; p < pfn + pages; p++)
        {
            ReadOnlySpan<byte> page = _memory.Ram.Page(p);
            int at = page.IndexOfAnyExcept(expected);
            if (at >= 0)
            {
                _poisonViolations.Add(new PoisonViolation(p, at, expected, page[at]));
                AddToHeader64(HPoisonViolations, 1);
            }
        }
    }

    private static void CheckOrder(int order)
    {
        if ((uint)order > MaxOrder)
        {
            throw new ArgumentOutOfRangeException(nameof(order), order, $"Buddy order must be 0..{MaxOrder}.");
        }
    }
}
