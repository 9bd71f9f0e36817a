using Migration.RaceFuzzer.Tests.Harness;
using Migration.Shared.Balloon;
using Migration.Shared.Concurrency;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Machine;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// R4: applying a hint in eager mode also wipes the block's pages from the write log, so a write logged since the last
/// sync is forgotten. The log has no such operation (nothing correct needs one), so the mutant builds it from the
/// public ones: it fetches the whole log and logs every page outside the block again, in one step.
/// </summary>
public sealed class R04HintClearsWriteLog : Mutant
{
    public override string Race => "R4";

    public override FuzzProfile Profile => FuzzProfile.EagerNoAck;

    internal override GuestSeams Guest(GuestSeams seams) =>
        seams with { HintDefences = new WipesLog(seams.HintDefences) };

    private sealed class WipesLog(IHintDefences inner) : ForwardingDefences(inner)
    {
        public override long Apply(MigrationBitmap bitmap, long firstPfn, long pages)
        {
            using (bitmap.Lock())
            using (SchedulingPoints.NoYield())
            {
                var fetched = new PageBitmap(bitmap.Pages.PageCount);
                bitmap.Log.SyncInto(fetched);
                for (long pfn = fetched.FindNextSet(0); pfn >= 0; pfn = fetched.FindNextSet(pfn + 1))
                {
                    if (pfn < firstPfn || pfn >= firstPfn + pages)
                    {
                        bitmap.Log.MarkDirty(pfn);
                    }
                }

                return bitmap.Pages.ClearRange(firstPfn, pages);
            }
        }
    }
}
