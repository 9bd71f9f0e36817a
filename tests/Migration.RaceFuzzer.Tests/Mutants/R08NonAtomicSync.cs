using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Machine;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R8: an eager sync reads a log word and clears it in two steps (a hot-path flag, see HotPathDefences).
/// </summary>
public sealed class R08NonAtomicSync : Mutant
{
    public override string Race => "R8";

    public override FuzzProfile Profile => FuzzProfile.EagerWaitOnAck;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { HotPaths = seams.HotPaths with { AtomicLogFetch = false } };
}
