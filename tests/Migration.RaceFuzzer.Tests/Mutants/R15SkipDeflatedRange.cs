using Migration.Shared.Machine;
using Migration.TestSupport;
using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R15: the device clears the balloon's pages from the bitmap after every sync from the set it held at setup, so a
/// range deflated and written during precopy is skipped although the write logged it. Defence B3: the held pages are
/// skipped once, at setup; later inflates clear only their own pages, when the device uses them.
/// </summary>
public sealed class R15SkipDeflatedRange : Mutant
{
    public override string Race => "R15";

    public override FuzzProfile Profile => FuzzProfile.Balloon;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { BalloonDefences = new SkipsSetupSetAgain(seams.BalloonDefences) };

    /// <summary>Keeps the set held at setup and skips it again after every sync, stale once pages are deflated.</summary>
    private sealed class SkipsSetupSetAgain(IBalloonDefences inner) : ForwardingBalloonDefences(inner)
    {
        private List<PageRange> _atSetup = [];

        public override long AtSetup(IBalloonDeviceSteps device)
        {
            long skipped = base.AtSetup(device);
            _atSetup = device.Held();
            return skipped;
        }

        public override void AfterSync(IBalloonDeviceSteps device) => device.Skip(_atSetup);
    }
}
