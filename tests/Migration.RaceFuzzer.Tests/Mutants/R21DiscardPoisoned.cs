using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;
using Migration.Shared.Machine;
using Migration.TestSupport;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R21: the host discards reported pages whatever the guest's poison value, so a guest that poisons with 0xAA finds
/// zeros where it expects its pattern. Defence (QEMU's rule): no discard unless the poison value is zero.
/// </summary>
public sealed class R21DiscardPoisoned : Mutant
{
    public override string Race => "R21";

    public override FuzzProfile Profile => FuzzProfile.Reporting;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { BalloonDefences = new DiscardsAnyway(seams.BalloonDefences) };

    private sealed class DiscardsAnyway(IBalloonDefences inner) : ForwardingBalloonDefences(inner)
    {
        public override bool MayDiscardReported(uint poisonVal) => true;
    }
}
