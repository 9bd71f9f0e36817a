using Migration.Shared.Balloon;

namespace Migration.TestSupport;

/// <summary>Balloon defences that forward to another; a mutant overrides the one rule it breaks.</summary>
internal class ForwardingBalloonDefences(IBalloonDefences inner) : IBalloonDefences
{
    public virtual long AtSetup(IBalloonDeviceSteps device) => inner.AtSetup(device);

    public virtual void AfterSync(IBalloonDeviceSteps device) => inner.AfterSync(device);

    public virtual void BeforeSave(IBalloonDeviceSteps device) => inner.BeforeSave(device);

    public virtual IEnumerable<PageRange> Returned(IReadOnlyList<PageRange> named, Func<PageRange, long> heldIn) =>
        inner.Returned(named, heldIn);

    public virtual void Queued(IInflateRequest inflate) => inner.Queued(inflate);

    public virtual void Unused(IInflateRequest inflate, bool targetFell) => inner.Unused(inflate, targetFell);

    public virtual bool RequeueStatsOnRestore => inner.RequeueStatsOnRestore;

    public virtual bool ReturnsReportedAfterAck => inner.ReturnsReportedAfterAck;

    public virtual bool MayDiscardReported(uint poisonVal) => inner.MayDiscardReported(poisonVal);

    public virtual bool SkipsOnlyUnbackedDiscards => inner.SkipsOnlyUnbackedDiscards;

    public virtual bool LogsDiscardsDuringMigration => inner.LogsDiscardsDuringMigration;
}
