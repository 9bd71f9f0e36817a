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
    private readonly StaleFill _hog;

    public MemhogWorkload(WorkloadContext context, int vcpu)
        : base(context, vcpu)
    {
        _hog = new StaleFill(Kernel, order => AllocateData(order, PageOwner.Anonymous),
            (long)(Options.MemhogShare * Kernel.Layout.PageCount), Options.MemhogOrder);
    }

    public override WorkloadKind Kind => WorkloadKind.Memhog;

    public override bool IsWarm => (Vcpu != 0 || _hog.IsDone) && base.IsWarm;

    public override StepResult Step()
    {
        // vCPU 0 builds the page cache first, so the hog cannot crowd it out.
        if (Vcpu != 0 || !PageCacheFilled || _hog.IsDone)
        {
            return base.Step();
        }

        _hog.Step();
        return StepResult.Progress;
    }

    protected override void SaveState(BinaryWriter writer)
    {
        base.SaveState(writer);
        _hog.Save(writer);
    }

    protected override void LoadState(BinaryReader reader)
    {
        base.LoadState(reader);
        _hog.Load(reader);
    }
}
