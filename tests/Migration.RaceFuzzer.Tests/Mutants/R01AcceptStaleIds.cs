using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;
using Migration.Shared.Machine;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R1: the device does not compare command ids, so an old run's START starts hinting and its blocks apply.
/// </summary>
public sealed class R01AcceptStaleIds : Mutant
{
    public override string Race => "R1";

    public override FuzzProfile Profile => FuzzProfile.EagerNoAck;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { HintDefences = new AnyRunId(seams.HintDefences) };

    private sealed class AnyRunId(IHintDefences inner) : ForwardingDefences(inner)
    {
        public override bool IsCurrentRun(uint bufferId, uint currentId) => HintCommandId.IsRunId(bufferId);
    }
}
