using Migration.Protocol;
using Migration.Shared.Machine;

namespace Migration.Target.Receiving;

/// <summary>
/// What follows a decision on the target, once its report is queued. A resumed guest runs for good, or with
/// <c>--run-after</c> for its time, then is stopped and checked (<see cref="RunAfterCheck"/>, a second report) and
/// freed, which leaves the target idle. A migration that ended with no guest here, or a guest that was stopped, gives
/// the memory it took back to the host (<see cref="Hosting.IdleMemory"/>), off the caller's thread; with
/// <c>--once</c> the process exits instead, once its reports are written.
/// </summary>
internal sealed class AfterResume(TargetOptions options, ServedGuest served, TargetReportWriter reports,
    IHostApplicationLifetime lifetime, Hosting.IdleMemory idleMemory, TimeProvider time, ILogger log)
{
    /// <summary>How long <c>--once</c> waits for the reports before the process stops.</summary>
    private static readonly TimeSpan ReportWait = TimeSpan.FromSeconds(30);

    /// <summary>A verified guest resumed here: its run-after check (or, with --once and none, the exit) follows.</summary>
    public void Resumed(IncomingMigration migration, VirtualMachine vm, CompleteReply reply) =>
        _ = RunAfterAsync(migration, vm, reply);

    /// <summary>
    /// A migration is over and its guest gone: with --once the target exits; otherwise it gives the memory the
    /// migration took back to the host, off the caller's thread.
    /// </summary>
    public void Ended()
    {
        if (options.Once)
        {
            StopIfOnce();
            return;
        }

        _ = Task.Run(idleMemory.Release);
    }

    private async Task RunAfterAsync(IncomingMigration migration, VirtualMachine vm, CompleteReply reply)
    {
        if (options.RunAfterSeconds is not double seconds)
        {
            _ = Task.Run(StopIfOnce); // not on the Complete call's thread: stopping waits for the report file
            return;
        }

        await Task.Delay(TimeSpan.FromSeconds(seconds), time).ConfigureAwait(false);
        served.StopServing(vm); // the API lets go before the guest stops

        var check = RunAfterCheck.Run(vm, migration.Id, seconds, log);
        reports.Queue(() => TargetReport.Of(migration.Id,
            check.Ok ? TargetOutcome.Resumed : TargetOutcome.FailedAfterResume, reply, check.Ok ? null : check.Text,
            migration.CpuAtStart, check.Text));
        // The guest has been stopped and checked. Its memory goes back to the host before the target says it is
        // free, so "idle" means ready and as small as it started; meanwhile a Begin is told the guest still runs.
        vm.Dispose();
        if (!options.Once)
        {
            idleMemory.Release();
        }

        served.Release(vm);
        StopIfOnce();
    }

    private void StopIfOnce()
    {
        if (options.Once)
        {
            reports.Flush(ReportWait);
            lifetime.StopApplication();
        }
    }
}
