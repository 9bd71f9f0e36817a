using Migration.Shared.Machine;
using Migration.TestSupport;
using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R13: the driver takes back the pages of an inflate the device has not used yet (the target fell meanwhile) and the
/// guest reuses them; the device then discards pages the guest owns. Defence B1: an inflate's pages stay the
/// balloon's until the device used the buffer.
/// </summary>
public sealed class R13TouchBeforeInflateAck : Mutant
{
    public override string Race => "R13";

    public override FuzzProfile Profile => FuzzProfile.Balloon;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { BalloonDefences = new TakesBackUnused(seams.BalloonDefences) };

    private sealed class TakesBackUnused(IBalloonDefences inner) : ForwardingBalloonDefences(inner)
    {
        public override void Unused(IInflateRequest inflate, bool targetFell)
        {
            if (targetFell)
            {
                inflate.Abandon(); // the pages go back to the allocator while the device may still discard them
            }
        }
    }
}
