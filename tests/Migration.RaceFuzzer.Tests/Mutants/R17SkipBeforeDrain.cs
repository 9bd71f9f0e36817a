using Migration.Shared.Machine;
using Migration.TestSupport;
using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R17: at setup the device clears its held pages from the bitmap before it uses the deflates already queued, so pages
/// the guest took back (and wrote before dirty logging started) are never sent. Defence B5: use what is queued, then
/// skip what is held.
/// </summary>
public sealed class R17SkipBeforeDrain : Mutant
{
    public override string Race => "R17";

    public override FuzzProfile Profile => FuzzProfile.Balloon;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { BalloonDefences = new SkipsFirst(seams.BalloonDefences) };

    private sealed class SkipsFirst(IBalloonDefences inner) : ForwardingBalloonDefences(inner)
    {
        public override long AtSetup(IBalloonDeviceSteps device)
        {
            long skipped = device.Skip(device.Held());
            device.UseQueued();
            return skipped;
        }
    }
}
