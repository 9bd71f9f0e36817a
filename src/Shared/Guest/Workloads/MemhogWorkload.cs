using Migration.Shared.Guest.Kernel;

namespace Migration.Shared.Guest.Workloads;

/// <summary>
/// A memory-hungry job that ran and exited (<c>memhog 7g</c> in the published runs): after the idle page cache is in
/// place, vCPU 0 fills <see cref="WorkloadOptions.MemhogShare"/> of RAM with data in huge-page-sized blocks, then frees
/// it all and the guest goes idle. The freed pages keep their stale data (or the poison pattern): exactly the memory
/// free page hinting skips. One process on one vCPU, like the tool; the other vCPUs idle.
/// </summary>
public sealed class MemhogWorkload : IdleWorkload
{
    private enum Phase : byte
    {
        Fill,
        Free,
        Done,
    }

    private Phase _phase;
    private TaskTable? _hog;
    private long _hogPages;

    public MemhogWorkload(WorkloadContext context, int vcpu)
        : base(context, vcpu)
    {
    }

    public override WorkloadKind Kind => WorkloadKind.Memhog;

    public override bool IsWarm => (Vcpu != 0 || _phase == Phase.Done) && base.IsWarm;

    private long HogTarget => (long)(Options.MemhogShare * Kernel.Layout.PageCount);

    public override StepResult Step()
    {
        // vCPU 0 builds the page cache first, so the hog cannot crowd it out.
        if (Vcpu != 0 || !PageCacheFilled || _phase == Phase.Done)
        {
            return base.Step();
        }

        return _phase == Phase.Fill ? FillStep() : FreeStep();
    }

    private StepResult FillStep()
    {
        _hog ??= TaskTable.Create(Kernel, Math.Max(1, (HogTarget >> Options.MemhogOrder) * 2));
        if (_hogPages >= HogTarget || _hog.IsFull)
        {
            _phase = Phase.Free;
            return StepResult.Progress;
        }

        // Fall back to smaller blocks when huge ones run out, as the kernel does when THP allocation fails.
        for (int order = Options.MemhogOrder; order >= 0; order--)
        {
            long pfn = AllocateData(order, PageOwner.Anonymous);
            if (pfn >= 0)
            {
                _hog.Add(pfn, order);
                _hogPages += 1L << order;
                return StepResult.Progress;
            }
        }

        _phase = Phase.Free; // RAM is full: the job "finishes" early
        return StepResult.Progress;
    }

    private StepResult FreeStep()
    {
        if (_hog is null || _hog.Count == 0)
        {
            if (_hog is not null)
            {
                Kernel.Free(_hog.Pfn, _hog.Order);
                _hog = null;
            }

            _phase = Phase.Done;
            return StepResult.Progress;
        }

        var (pfn, order) = _hog.RemoveAt(_hog.Count - 1);
        Kernel.Free(pfn, order);
        return StepResult.Progress;
    }

    protected override void SaveState(BinaryWriter writer)
    {
        base.SaveState(writer);
        writer.Write((byte)_phase);
        writer.Write(_hog?.Pfn ?? -1);
        writer.Write(_hogPages);
    }

    protected override void LoadState(BinaryReader reader)
    {
        base.LoadState(reader);
        _phase = (Phase)reader.ReadByte();
        _hog = OpenTable(ReadTablePfn(reader));
        _hogPages = reader.ReadInt64();
    }
}
