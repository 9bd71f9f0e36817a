using Migration.Shared.Machine;
using Migration.TestSupport;
using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R18: the device drops a whole deflate when some of its pages are not in the balloon. Without MUST_TELL_HOST the
/// guest reuses deflated pages at once, and virtqueues are served in any order: a page deflated and inflated again can
/// reach the device inflate first (refused: still held), so a later deflate naming it is only partly held. Dropping it
/// leaves pages the guest is writing marked as discarded, and the target discards them. Defence B6: a deflate returns
/// every page of it the balloon holds.
/// </summary>
public sealed class R18DropPartlyHeldDeflate : Mutant
{
    public override string Race => "R18";

    public override FuzzProfile Profile => FuzzProfile.Balloon;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { BalloonDefences = new DropsWhole(seams.BalloonDefences) };

    private sealed class DropsWhole(IBalloonDefences inner) : ForwardingBalloonDefences(inner)
    {
        public override IEnumerable<PageRange> Returned(IReadOnlyList<PageRange> named, Func<PageRange, long> heldIn) =>
            named.Any(r => heldIn(r) != r.Count) ? [] : named;
    }
}
