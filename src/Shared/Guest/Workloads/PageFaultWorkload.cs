using Migration.Shared.Guest.Kernel;

namespace Migration.Shared.Guest.Workloads;

/// <summary>
/// will-it-scale's <c>page_fault1</c> with transparent huge pages, the load Duyck measured free page reporting on:
/// each vCPU maps a region (128 MiB), writes every page of it, unmaps it, and again, as fast as it runs. Here a
/// mapping's faults are allocations of <see cref="WorkloadOptions.PageFaultOrder"/> blocks (2 MiB) written in full,
/// and the unmap frees them all, last allocated first. The region is reused whole, so the allocator hands back what
/// was just freed; the rest of the guest's memory stays free and idle.
/// </summary>
public sealed class PageFaultWorkload : Workload
{
    private TaskTable? _region;
    private bool _unmapping;

    public PageFaultWorkload(WorkloadContext context, int vcpu)
        : base(context, vcpu)
    {
    }

    public override WorkloadKind Kind => WorkloadKind.PageFault;

    public override bool IsWarm => true;

    private int Blocks => Options.PageFaultBlocks;

    public override StepResult Step()
    {
        _region ??= TaskTable.Create(Kernel, Blocks);
        if (_unmapping)
        {
            var (pfn, order) = _region.RemoveAt(_region.Count - 1);
            Kernel.Free(pfn, order);
            _unmapping = _region.Count > 0;
            return StepResult.Progress;
        }

        long block = AllocateData(Options.PageFaultOrder, PageOwner.Anonymous);
        if (block >= 0)
        {
            _region.Add(block, Options.PageFaultOrder);
        }

        // The region is mapped in full (or memory ran short, or its table is full): unmap it.
        _unmapping = _region.Count > 0 && (block < 0 || _region.Count >= Blocks || _region.IsFull);
        return StepResult.Progress;
    }

    protected override void SaveState(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(_region?.Pfn ?? -1);
        writer.Write(_unmapping);
    }

    protected override void LoadState(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        _region = OpenTable(ReadTablePfn(reader));
        _unmapping = reader.ReadBoolean();
        if (_unmapping && (_region is null || _region.Count == 0))
        {
            throw new InvalidDataException("a page-fault vCPU state is unmapping a region it does not hold.");
        }
    }
}
