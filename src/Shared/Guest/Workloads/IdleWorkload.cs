using Migration.Shared.Guest.Kernel;

namespace Migration.Shared.Guest.Workloads;

/// <summary>
/// An idle guest: vCPU 0 fills the kernel's data and the page cache to about 5% of RAM, then keeps writing a few pages
/// a second (timers, logs). The rest of RAM is free and never touched. Other vCPUs do nothing.
/// </summary>
public class IdleWorkload : Workload
{
    private RatePacer _pacer;
    private TaskTable? _cache;
    private bool _cacheFilled;
    private long _cachePages;

    public IdleWorkload(WorkloadContext context, int vcpu)
        : base(context, vcpu)
    {
        _pacer = new RatePacer(CpuClock, context.Options.IdleDirtyPagesPerSecond);
        _cacheFilled = vcpu != 0;
    }

    public override WorkloadKind Kind => WorkloadKind.Idle;

    public override bool IsWarm => _cacheFilled;

    /// <summary>Pages the page cache should reach: the share of RAM less what the kernel itself already uses.</summary>
    protected long PageCacheTarget
    {
        get
        {
            var layout = Kernel.Layout;
            long kernelPages = 1 + layout.DescriptorPages;
            return Math.Max(0, (long)(Options.PageCacheShare * layout.PageCount) - kernelPages);
        }
    }

    protected bool PageCacheFilled => _cacheFilled;

    public override StepResult Step()
    {
        if (!_cacheFilled)
        {
            return FillPageCacheStep();
        }

        // A rate of 0 means a guest that writes nothing (for a pacer, 0 would mean unlimited).
        if (Vcpu != 0 || _cache is null || _cache.Count == 0 || Options.IdleDirtyPagesPerSecond <= 0
            || !_pacer.TryTake())
        {
            return StepResult.Idle;
        }

        TouchPage(PickPage(_cache, _cache.Count));
        return StepResult.Progress;
    }

    private StepResult FillPageCacheStep()
    {
        long target = PageCacheTarget;
        _cache ??= TaskTable.Create(Kernel, Math.Max(1, target));
        if (_cachePages >= target || _cache.IsFull)
        {
            _cacheFilled = true;
            return StepResult.Progress;
        }

        // Mostly single pages (page cache), some small multi-page blocks (slab, kernel stacks).
        int order = Random.Next(8) switch
        {
            < 5 => 0,
            5 => 1,
            6 => 2,
            _ => 4,
        };
        var owner = Random.Next(4) == 0 ? PageOwner.KernelData : PageOwner.PageCache;
        long pfn = AllocateData(order, owner);
        if (pfn < 0)
        {
            _cacheFilled = true; // out of memory: settle with what we have
            return StepResult.Progress;
        }

        _cache.Add(pfn, order);
        _cachePages += 1L << order;
        return StepResult.Progress;
    }

    protected override void SaveState(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(_cache?.Pfn ?? -1);
        writer.Write(_cacheFilled);
        writer.Write(_cachePages);
        writer.Write(_pacer.Tokens);
    }

    protected override void LoadState(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        _cache = OpenTable(ReadTablePfn(reader));
        _cacheFilled = reader.ReadBoolean();
        _cachePages = ReadCount(reader, Kernel.Layout.PageCount, "page-cache pages");
        _pacer = new RatePacer(CpuClock, Options.IdleDirtyPagesPerSecond);
        _pacer.Tokens = ReadTokens(reader);
    }
}
