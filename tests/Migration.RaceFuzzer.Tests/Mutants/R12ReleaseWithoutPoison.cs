using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Machine;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>R12: the balloon driver gives held blocks back without initialising (poisoning) them.</summary>
public sealed class R12ReleaseWithoutPoison : Mutant
{
    public override string Race => "R12";

    public override FuzzProfile Profile => FuzzProfile.EagerWaitOnAck;

    internal override GuestSeams Guest(GuestSeams seams) => seams with { BalloonInitialisesOnRelease = false };
}
