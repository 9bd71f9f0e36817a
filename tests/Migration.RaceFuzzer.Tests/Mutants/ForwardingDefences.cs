using Migration.Shared.Balloon;
using Migration.Shared.DirtyTracking;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>Hint defences that forward to another; a mutant overrides the one decision it breaks.</summary>
internal class ForwardingDefences(IHintDefences inner) : IHintDefences
{
    public virtual bool IsCurrentRun(uint bufferId, uint currentId) => inner.IsCurrentRun(bufferId, currentId);

    public virtual HintStatus Next(HintStatus status, HintEvent e) => inner.Next(status, e);

    public virtual bool ProcessesWhileStopped => inner.ProcessesWhileStopped;

    public virtual long Apply(MigrationBitmap bitmap, long firstPfn, long pages) =>
        inner.Apply(bitmap, firstPfn, pages);
}
