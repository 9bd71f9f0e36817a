using Migration.Shared.Guest.Kernel;

namespace Migration.Shared.Guest.Workloads;

/// <summary>
/// A steady dirtying load shaped like a parallel build: each vCPU's processes hold a working set of small blocks, write
/// pages at the configured rate (most writes to a hot set), and now and then one exits and another starts. With
/// <see cref="WorkloadOptions.BusyStaleShare"/>, vCPU 0 first runs the history of a build that has been going for a
/// while: earlier jobs filled that share of RAM and exited, leaving stale data in free memory.
/// </summary>
public sealed class BusyWorkload : Workload
{
    private RatePacer _pacer;
    private TaskTable? _set;
    private long _setPages;
    private bool _warm;
    private readonly StaleFill _history;

    public BusyWorkload(WorkloadContext context, int vcpu)
        : base(context, vcpu)
    {
        _pacer = NewPacer();
        long stalePages = vcpu == 0 ? (long)(Options.BusyStaleShare * Kernel.Layout.PageCount) : 0;
        _history = new StaleFill(Kernel, order => AllocateData(order, PageOwner.Anonymous), stalePages, order: 9);
    }

    public override WorkloadKind Kind => WorkloadKind.Busy;

    public override bool IsWarm => _warm && _history.IsDone;

    private long WorkingSetTarget =>
        Math.Max(1, (long)(Options.BusyWorkingSetShare * Kernel.Layout.PageCount / Context.VcpuCount));

    public override StepResult Step()
    {
        if (!_history.IsDone)
        {
            _history.Step();
            return StepResult.Progress;
        }

        _set ??= TaskTable.Create(Kernel, WorkingSetTarget);
        if (!_warm)
        {
            // Start-up: processes fault in their working set as fast as they can.
            if (_setPages < WorkingSetTarget && !_set.IsFull && AllocateInto(_set))
            {
                return StepResult.Progress;
            }

            _warm = true;
            return StepResult.Progress;
        }

        if (_set.Count == 0 || !_pacer.TryTake())
        {
            return StepResult.Idle;
        }

        if (Random.NextDouble() < Options.BusyExitChance)
        {
            // A process exits and a new one starts: its memory goes back and fresh memory is faulted in.
            var (pfn, order) = _set.RemoveAt((int)Random.Next(_set.Count));
            Kernel.Free(pfn, order);
            _setPages -= 1L << order;
            AllocateInto(_set);
            return StepResult.Progress;
        }

        int hotEntries = Math.Max(1, (int)(_set.Count * Options.BusyHotSetShare));
        bool hot = Random.NextDouble() < Options.BusyHotWriteShare;
        TouchPage(PickPage(_set, hot ? hotEntries : _set.Count));
        return StepResult.Progress;
    }

    private bool AllocateInto(TaskTable table)
    {
        int order = (int)Random.Next(4);
        long pfn = AllocateData(order, PageOwner.Anonymous);
        if (pfn < 0)
        {
            return false;
        }

        table.Add(pfn, order);
        _setPages += 1L << order;
        return true;
    }

    private RatePacer NewPacer() => new(CpuClock, Options.BusyDirtyPagesPerSecond / Context.VcpuCount);

    protected override void SaveState(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(_set?.Pfn ?? -1);
        writer.Write(_setPages);
        writer.Write(_warm);
        writer.Write(_pacer.Tokens);
        _history.Save(writer);
    }

    protected override void LoadState(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        _set = OpenTable(ReadTablePfn(reader));
        _setPages = ReadCount(reader, Kernel.Layout.PageCount, "working-set pages");
        _warm = reader.ReadBoolean();
        _pacer = NewPacer();
        _pacer.Tokens = ReadTokens(reader);
        _history.Load(reader);
    }
}
