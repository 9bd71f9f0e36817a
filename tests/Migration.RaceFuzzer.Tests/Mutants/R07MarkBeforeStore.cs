using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Machine;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R7: the guest write path marks the page dirty before it stores (a hot-path flag, see HotPathDefences).
/// </summary>
public sealed class R07MarkBeforeStore : Mutant
{
    public override string Race => "R7";

    public override FuzzProfile Profile => FuzzProfile.EagerWaitOnAck;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { HotPaths = seams.HotPaths with { StoreBeforeMark = false } };
}
