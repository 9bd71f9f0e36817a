using Migration.RaceFuzzer.Tests.Harness;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>R11: the channels have no per-round barrier and the target ignores round tags.</summary>
public sealed class R11OutOfOrderChannels : Mutant
{
    public override string Race => "R11";

    public override FuzzProfile Profile => FuzzProfile.EagerWaitOnAck;

    public override bool OrdersChannels => false;
}
