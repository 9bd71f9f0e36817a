using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Devices;
using Migration.Shared.Precopy;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>R2: the engine does not stop hinting before the precopy syncs (it still issues a new id after).</summary>
public sealed class R02SkipStopBeforeSync : Mutant
{
    public override string Race => "R2";

    public override FuzzProfile Profile => FuzzProfile.EagerNoAck;

    internal override EngineSeams Engine(EngineSeams seams) =>
        seams with { Participant = p => new NoStopWhileRunning(seams.Participant(p)) };

    private sealed class NoStopWhileRunning(IPrecopyParticipant inner) : ForwardingParticipant(inner)
    {
        public override void BeforeSync(bool vmRunning)
        {
            if (!vmRunning)
            {
                Inner.BeforeSync(vmRunning);
            }
        }
    }
}
