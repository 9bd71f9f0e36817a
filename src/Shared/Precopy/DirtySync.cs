using Migration.Shared.Concurrency;
using Migration.Shared.Devices;
using Migration.Shared.DirtyTracking;

namespace Migration.Shared.Precopy;

/// <summary>
/// A dirty-log sync wrapped for the participants (H2, QEMU's <c>migration_bitmap_sync_precopy</c>): every
/// participant hears <see cref="IPrecopyParticipant.BeforeSync"/>, the log moves into the bitmap under the bitmap
/// lock, then every participant hears <see cref="IPrecopyParticipant.AfterSync"/>. The setup sync and the final one
/// go through here like every other, so no participant is ever left running across a sync.
/// </summary>
internal sealed class DirtySync(MigrationBitmap bitmap, IReadOnlyList<IPrecopyParticipant> participants,
    SchedulingPoints points)
{
    /// <summary>Runs one sync; returns the pages the log reported.</summary>
    public long Run(bool vmRunning)
    {
        foreach (var participant in participants)
        {
            participant.BeforeSync(vmRunning);
        }

        points.Preempt();
        long reported = bitmap.SyncFromLog();
        points.Preempt();
        foreach (var participant in participants)
        {
            participant.AfterSync(vmRunning);
        }

        points.Preempt();
        return reported;
    }
}
