using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Machine;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R6: in manual mode a hint clears the migration bitmap but not the dirty-log chunk (QEMU before 3143577d).
/// </summary>
public sealed class R06HintWithoutChunkClear : Mutant
{
    public override string Race => "R6";

    public override FuzzProfile Profile => FuzzProfile.ManualWaitOnAck;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { HintDefences = new BitmapOnly(seams.HintDefences) };

    private sealed class BitmapOnly(IHintDefences inner) : ForwardingDefences(inner)
    {
        public override long Apply(MigrationBitmap bitmap, long firstPfn, long pages)
        {
            using (bitmap.Lock())
            {
                return bitmap.Pages.ClearRange(firstPfn, pages);
            }
        }
    }
}
