using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;
using Migration.Shared.Machine;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>R10: an id buffer equal to the current id restarts hinting from STOP, not only from REQUESTED.</summary>
public sealed class R10HonourReplayedStart : Mutant
{
    public override string Race => "R10";

    public override FuzzProfile Profile => FuzzProfile.EagerNoAck;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { HintDefences = new ReplayRestarts(seams.HintDefences) };

    internal sealed class ReplayRestarts(IHintDefences inner) : ForwardingDefences(inner)
    {
        public override HintStatus Next(HintStatus status, HintEvent e) =>
            status == HintStatus.Stop && e == HintEvent.CurrentIdBuffer ? HintStatus.Start : base.Next(status, e);
    }
}
