using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Guest;

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
        seams with { BalloonRules = seams.BalloonRules with { DeviceSkipsBalloonOnce = false } };
}
