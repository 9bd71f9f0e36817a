using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;
using Migration.Shared.Machine;
using Migration.TestSupport;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R22: at setup the device skips every page in its discard map, although the guest may have allocated and written a
/// reported block since (it tells the host nothing), so those writes are never sent. Defence: skip a discarded page
/// only while the host still backs nothing there, checked after dirty logging is on.
/// </summary>
public sealed class R22SkipReusedDiscard : Mutant
{
    public override string Race => "R22";

    public override FuzzProfile Profile => FuzzProfile.Reporting;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { BalloonDefences = new TrustsTheMap(seams.BalloonDefences) };

    private sealed class TrustsTheMap(IBalloonDefences inner) : ForwardingBalloonDefences(inner)
    {
        public override bool SkipsOnlyUnbackedDiscards => false;
    }
}
