using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;
using Migration.Shared.Devices;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R9: hints flow during stop-and-copy. The hint thread keeps applying while the VM is stopped (no H5), and the final
/// sync is not wrapped: no stop before it, and DONE only once the last pages are out (no H2 for the final sync).
/// </summary>
public sealed class R09ApplyWhileStopped : Mutant
{
    public override string Race => "R9";

    public override FuzzProfile Profile => FuzzProfile.EagerNoAck;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { HintDefences = new KeepsApplying(seams.HintDefences) };

    internal override EngineSeams Engine(EngineSeams seams) =>
        seams with { Participant = p => new FinalSyncUnwrapped(seams.Participant(p)) };

    private sealed class KeepsApplying(IHintDefences inner) : ForwardingDefences(inner)
    {
        public override bool ProcessesWhileStopped => true;
    }

    private sealed class FinalSyncUnwrapped(IPrecopyParticipant inner) : ForwardingParticipant(inner)
    {
        public override void BeforeSync(bool vmRunning)
        {
            if (vmRunning)
            {
                Inner.BeforeSync(vmRunning);
            }
        }

        public override void AfterSync(bool vmRunning)
        {
            if (vmRunning)
            {
                Inner.AfterSync(vmRunning);
            }
        }

        public override void Complete()
        {
            Inner.AfterSync(vmRunning: false); // DONE only now
            Inner.Complete();
        }
    }
}
