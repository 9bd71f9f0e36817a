using Migration.Shared.Machine;
using Migration.TestSupport;
using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R14: the driver counts an inflate's pages as the balloon's when it queues the buffer, so it may deflate (and reuse)
/// them before the device used the inflate; the device serves the deflate first (refused: not in the balloon) and
/// then discards the reused pages. Defence B2: only acknowledged pages are ever deflated.
/// </summary>
public sealed class R14DeflateBeforeInflateAck : Mutant
{
    public override string Race => "R14";

    public override FuzzProfile Profile => FuzzProfile.Balloon;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { BalloonDefences = new CountsAtQueue(seams.BalloonDefences) };

    private sealed class CountsAtQueue(IBalloonDefences inner) : ForwardingBalloonDefences(inner)
    {
        public override void Queued(IInflateRequest inflate) => inflate.Acknowledge();
    }
}
