using Migration.Shared.Guest.Kernel;

namespace Migration.Shared.Guest.Workloads;

/// <summary>
/// Allocates, writes and frees small blocks as fast as it can. The allocator's free lists are LIFO, so what was just
/// freed is what gets allocated and written next: the access pattern that makes a late free-page hint dangerous.
/// </summary>
public sealed class ChurnWorkload : Workload
{
    private RatePacer _pacer;
    private TaskTable? _held;

    public ChurnWorkload(WorkloadContext context, int vcpu)
        : base(context, vcpu)
    {
        _pacer = NewPacer();
    }

    public override WorkloadKind Kind => WorkloadKind.Churn;

    public override bool IsWarm => true;

    public override StepResult Step()
    {
        _held ??= TaskTable.Create(Kernel, Options.ChurnHeldBlocks + 1);
        if (!_pacer.TryTake())
        {
            return StepResult.Idle;
        }

        if (_held.Count > Options.ChurnHeldBlocks || _held.IsFull || (_held.Count > 0 && Random.Next(3) == 0))
        {
            var (victim, victimOrder) = _held.RemoveAt((int)Random.Next(_held.Count));
            Kernel.Free(victim, victimOrder);
            return StepResult.Progress;
        }

        int order = (int)Random.Next(Options.ChurnMaxOrder + 1);
        long pfn = AllocateData(order, PageOwner.Anonymous);
        if (pfn >= 0)
        {
            _held.Add(pfn, order);
        }
        else if (_held.Count > 0)
        {
            var (victim, victimOrder) = _held.RemoveAt(_held.Count - 1);
            Kernel.Free(victim, victimOrder);
        }

        return StepResult.Progress;
    }

    private RatePacer NewPacer() => new(CpuClock, Options.ChurnPagesPerSecond / Context.VcpuCount);

    protected override void SaveState(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(_held?.Pfn ?? -1);
        writer.Write(_pacer.Tokens);
    }

    protected override void LoadState(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        _held = OpenTable(ReadTablePfn(reader));
        _pacer = NewPacer();
        _pacer.Tokens = ReadTokens(reader);
    }
}
