using Migration.Shared.Machine;
using Migration.TestSupport;
using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R16: the device state is saved with deflates still queued, so the held ranges name pages the guest already took
/// back and wrote; the target would discard them. Defence B4: the device uses every queued buffer once the VM is
/// paused, before the state is saved (and the target refuses held pages its guest owns).
/// </summary>
public sealed class R16SaveWithoutDrain : Mutant
{
    public override string Race => "R16";

    public override FuzzProfile Profile => FuzzProfile.Balloon;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { BalloonDefences = new SavesWithQueued(seams.BalloonDefences) };

    private sealed class SavesWithQueued(IBalloonDefences inner) : ForwardingBalloonDefences(inner)
    {
        public override void BeforeSave(IBalloonDeviceSteps device)
        {
        }
    }
}
