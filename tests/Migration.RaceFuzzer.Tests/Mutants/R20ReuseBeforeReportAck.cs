using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;
using Migration.Shared.Machine;
using Migration.TestSupport;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R20: the reporting driver gives its blocks back to the allocator as soon as it queued the report, so a vCPU can
/// allocate and write a block before the device discards it, and the discard wipes the write. Defence: the blocks stay
/// isolated until the device used the report.
/// </summary>
public sealed class R20ReuseBeforeReportAck : Mutant
{
    public override string Race => "R20";

    public override FuzzProfile Profile => FuzzProfile.Reporting;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { BalloonDefences = new ReturnsAtOnce(seams.BalloonDefences) };

    private sealed class ReturnsAtOnce(IBalloonDefences inner) : ForwardingBalloonDefences(inner)
    {
        public override bool ReturnsReportedAfterAck => false;
    }
}
