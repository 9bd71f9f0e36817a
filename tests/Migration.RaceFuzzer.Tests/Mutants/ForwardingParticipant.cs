using Migration.Shared.Devices;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;

namespace Migration.RaceFuzzer.Tests.Mutants;

/// <summary>
/// A precopy participant that forwards every call; a mutant drops or moves the notifications it breaks.
/// </summary>
internal class ForwardingParticipant(IPrecopyParticipant inner) : IPrecopyParticipant
{
    protected IPrecopyParticipant Inner => inner;

    public virtual bool Setup(PrecopySetup setup) => inner.Setup(setup);

    public virtual void BeforeSync(bool vmRunning) => inner.BeforeSync(vmRunning);

    public virtual void AfterSync(bool vmRunning) => inner.AfterSync(vmRunning);

    public virtual void Complete() => inner.Complete();

    public virtual void Cleanup(MigrationStatus outcome) => inner.Cleanup(outcome);

    public virtual void Report(MigrationReport report) => inner.Report(report);
}
