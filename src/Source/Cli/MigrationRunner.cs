using System.Diagnostics;
using System.Globalization;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Migration.Shared.Hosting;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Shared.Transport;

namespace Migration.Source.Cli;

/// <summary>
/// Boots a guest, warms it up, migrates it and prints what happened. Shared by <c>migrate</c> and <c>demo</c>.
/// </summary>
internal static class MigrationRunner
{
    /// <summary>
    /// One second of guest run before migrating: the workload reaches its steady state (and the wait also covers
    /// memhog's fill and free, however long that takes).
    /// </summary>
    public static readonly TimeSpan DefaultWarmup = TimeSpan.FromSeconds(1);

    /// <summary>How long the guest runs alone at the end of its warm-up, its pace measured as the baseline.</summary>
    public static readonly TimeSpan BaselineWindow = TimeSpan.FromMilliseconds(300);

    /// <param name="balloonPages">Inflate the balloon to this many pages once the guest is warm (0: leave it).</param>
    /// <param name="awaitReporting">
    /// With free page reporting, wait up to this long after the warm-up for the guest to have reported what it will
    /// (its driver idle), so a comparison migrates a guest whose free memory the host has already discarded.
    /// </param>
    public static async Task<MigrationReport> RunAsync(GuestConfig guest, MigrationOptions options, TimeSpan warmup,
        TextWriter output, ILoggerFactory logging, CancellationToken ct, long balloonPages = 0,
        TimeSpan awaitReporting = default)
    {
        ArgumentNullException.ThrowIfNull(guest);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(logging);
        // Is the target there and free? Asked before booting, so a wrong URL costs a second, not a guest's boot.
        try
        {
            var status = await GrpcMigrationTransport.ProbeAsync(options.Target, options.Security, ct)
                .ConfigureAwait(false);
            if (TargetStates.TryParse(status.State, out var state) && state.IsBusy())
            {
                return NotStarted(guest, $"the target at {options.Target} is busy with a migration ({status.State})");
            }
        }
        catch (Exception ex) when (ex is RpcException or OperationCanceledException && ct.IsCancellationRequested)
        {
            return CancelledBeforeMigrating(guest, null, "while asking the target for its status", output);
        }
        catch (RpcException ex)
        {
            return NotStarted(guest,
                $"the target at {options.Target} is not reachable: {ex.Status.StatusCode}: {ex.Status.Detail}");
        }

        output.WriteLine($"source: booting a {guest.RamBytes >> 20} MiB guest, {guest.Vcpus} vCPUs, " +
            $"workload {guest.Workload.Kind.ToString().ToLowerInvariant()}, seed {guest.Workload.Seed}");
        using var vm = VirtualMachine.Boot(guest);
        vm.Start();
        string phase = "during the guest's boot or warm-up";
        var sw = Stopwatch.StartNew();
        double? opsBefore = null;
        try
        {
            // digests at stop-and-copy then run optimised code; the guest's pace is measured after it, undisturbed
            await Task.Run(() => SwitchoverWarmup.Run(), ct).ConfigureAwait(false);
            PaceSampler? pace = null;
            // Warm-up: at least the requested time, and until the workload has settled (memhog has filled and freed);
            // a workload that counts its work then runs alone long enough for its pace to be the baseline of what the
            // migration costs it (before it is warm, its steps fault in its working set as fast as they can).
            while ((sw.Elapsed < warmup || !vm.IsWarm
                    || (vm.GuestOperations > 0 && (pace?.Elapsed ?? TimeSpan.Zero) < BaselineWindow))
                && sw.Elapsed < warmup + TimeSpan.FromMinutes(5))
            {
                await Task.Delay(50, ct).ConfigureAwait(false);
                if (pace is not null)
                {
                    pace.Sample(vm.GuestOperations, sw.Elapsed);
                }
                else if (vm.IsWarm)
                {
                    pace = new PaceSampler(vm.GuestOperations, sw.Elapsed);
                }
            }

            opsBefore = pace?.MedianPerSecond;
            ct.ThrowIfCancellationRequested(); // the boot alone can take the signal
            if (balloonPages > 0)
            {
                phase = "while inflating the balloon";
                await BalloonInflation.RunAsync(vm, balloonPages, output, ct).ConfigureAwait(false);
            }

            if (vm.ReportingDriver is { } reporting && awaitReporting > TimeSpan.Zero)
            {
                phase = "while waiting for free page reporting";
                var wait = Stopwatch.StartNew();
                while ((reporting.Busy || reporting.Passes == 0) && wait.Elapsed < awaitReporting)
                {
                    await Task.Delay(20, ct).ConfigureAwait(false);
                }

                output.WriteLine($"source: reporting {(reporting.Busy ? "still busy" : "idle")} after " +
                    $"{wait.Elapsed.TotalSeconds:F1} s: {reporting.PagesReported:N0} pages reported in " +
                    $"{reporting.Passes:N0} passes, {vm.Kernel.ReportedPages:N0} free pages flagged reported");
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return CancelledBeforeMigrating(guest, vm, phase, output);
        }

        output.WriteLine($"source: guest warm after {sw.Elapsed.TotalSeconds:F1} s " +
            $"({vm.Kernel.FreePages:N0} of {vm.Ram.PageCount:N0} pages free); migrating to {options.Target}");
        var engine = new PrecopyEngine(vm, options, ProgressPrinter.ForConsole(),
            logger: logging.CreateLogger("precopy"));
        var cpuAtStart = ProcessStats.Now();
        long rssAtStart = Environment.WorkingSet;
        var report = await engine.MigrateAsync(ct).ConfigureAwait(false);
        report.Process = ProcessStats.Capture(cpuAtStart, rssAtStart);
        report.GuestThreadCpuSeconds = ThreadCpu.GuestThreads();
        report.Convergence.GuestOpsPerSecBefore = opsBefore is double before ? Math.Round(before, 1) : null;
        if (report.Status == MigrationStatus.Completed)
        {
            vm.Shutdown(); // the guest runs on the target now; this copy never runs again
        }
        else if (report.Status == MigrationStatus.Unknown)
        {
            output.WriteLine("source: the guest stays paused here; it never runs again from this process.");
            vm.Shutdown();
        }
        else
        {
            output.WriteLine($"source: the guest keeps running here (state {vm.State}).");
        }

        return report;
    }

    /// <summary>
    /// Ctrl+C or SIGTERM before the migration began: nothing reached the target, so there is nothing to cancel there;
    /// the report and the summary say so, and the guest (if it booted) stops with this process.
    /// </summary>
    private static MigrationReport CancelledBeforeMigrating(GuestConfig guest, VirtualMachine? vm, string phase,
        TextWriter output)
    {
        var report = NotStarted(guest, $"cancelled before migrating ({phase}); nothing was sent to the target");
        report.Status = MigrationStatus.Cancelled;
        if (vm is not null)
        {
            report.Guest.FreePages = vm.Kernel.FreePages;
            report.Guest.InUsePages = vm.Ram.PageCount - vm.Kernel.FreePages;
            output.WriteLine($"source: the guest keeps running here (state {vm.State}) until this process exits.");
        }

        return report;
    }

    private static MigrationReport NotStarted(GuestConfig guest, string error) => new()
    {
        Status = MigrationStatus.Failed,
        Error = error,
        Guest = MigrationReport.GuestSection.Of(guest),
    };

    public static void PrintSummary(MigrationReport r, TextWriter output)
    {
        if (r.Rounds.Count == 0 && r.Error is not null)
        {
            output.WriteLine($"source: migration {r.Status.ToString().ToLowerInvariant()}: {r.Error}");
            return;
        }

        var inv = CultureInfo.InvariantCulture;
        string alone = r.Convergence.GuestOpsPerSecBefore is double before
            ? string.Create(inv, $"{before:N0} ops/s alone before, ")
            : string.Empty;
        var rows = new List<(string, string)>
        {
            ("status", r.Status.ToString().ToLowerInvariant() + (r.Verified ? ", verified" : ", NOT verified")),
            ("guest", $"{r.Guest.RamBytes >> 20} MiB, {r.Guest.Workload}, " +
                $"{r.Guest.InUsePages:N0} pages in use, {r.Guest.FreePages:N0} free"),
            ("total time", string.Create(inv, $"{r.Timing.TotalMs:F0} ms (setup {r.Timing.SetupMs:F0} ms)")),
            ("downtime", string.Create(inv,
                $"{r.Timing.DowntimeMs:F1} ms (expected {r.Timing.ExpectedDowntimeMs:F1} ms, limit " +
                $"{r.Timing.DowntimeLimitMs:0.#} ms)")),
            ("expected split", string.Join(", ",
                r.Timing.ExpectedDowntimePhasesMs.Select(p => string.Create(inv, $"{p.Key} {p.Value:F0}")))),
            ("downtime split",
                string.Join(", ", r.Timing.DowntimePhasesMs.Select(p => string.Create(inv, $"{p.Key} {p.Value:F0}")))),
            ("after resume", r.Timing.AfterResumePhasesMs.Count == 0
                ? "nothing (verified inside the downtime)"
                : "outputs held " + string.Join(", ",
                    r.Timing.AfterResumePhasesMs.Select(p => string.Create(inv, $"{p.Key} {p.Value:F0}")))),
            ("rounds",
                $"{r.Rounds.Count} ({string.Join(", ", r.Rounds.Select(x => x.PagesSent.ToString("N0", inv)))} pages)"),
            ("convergence", r.Convergence is { Steps: 0, ParameterChanges: 0 } c0
                ? string.Create(inv,
                    $"{c0.Method}, the guest was not slowed; {alone}{c0.GuestOpsPerSecDuring:N0} ops/s over the migration")
                : string.Create(inv,
                    $"{r.Convergence.Method}, {r.Convergence.Steps} steps, throttle up to " +
                    $"{r.Convergence.MaxThrottlePercent:F0}%, {r.Convergence.VcpuMsStolen:F0} vCPU-ms taken; guest " +
                    $"{alone}{r.Convergence.GuestOpsPerSecFirstRound:N0} ops/s in round 0, " +
                    $"{r.Convergence.GuestOpsPerSecDuring:N0} over the migration; " +
                    $"{r.Convergence.ParameterChanges} settings changes")),
            ("bytes on wire", $"{r.Transfer.BytesOnWire:N0}"),
            ("pages", $"sent as data {r.Transfer.PagesNormal + r.Transfer.PagesCompressed:N0} " +
                $"({r.Transfer.PagesCompressed:N0} lz4), sent as delta {r.Transfer.PagesDelta:N0}, " +
                $"sent as zero {r.Transfer.PagesZero:N0}, " +
                $"skipped by hint {r.Transfer.PagesSkippedByHints:N0}, " +
                $"skipped as discarded {r.Transfer.PagesSkippedAsDiscarded:N0}, " +
                $"skipped as ballooned {r.Transfer.PagesSkippedAsBallooned:N0}"),
            ("throughput", string.Create(inv, $"{r.Transfer.ThroughputMBps:F1} MB/s")),
            ("deltas", r.Transfer.Delta is not { } d
                ? (r.Config.TryGetValue("deltaCacheBytes", out var asked) && asked is > 0L
                    ? "not taken by the target"
                    : "off")
                : $"{d.Hits:N0} hits, {d.Misses:N0} misses, {d.Overflows:N0} overflows, " +
                    $"{d.BytesSaved:N0} bytes saved; cache {d.CacheBytes >> 20:N0} MiB"),
            ("hints", r.Hints is not { } h
                ? "off"
                : $"{r.Transfer.PagesSkippedByHints:N0} pages skipped; {h.CommandIdsIssued} command ids, " +
                    $"{h.BlocksReceived:N0} blocks received, {h.BlocksApplied:N0} applied, " +
                    $"{h.BlocksDroppedStale:N0} dropped as stale, {h.DeviceErrors} device errors" +
                    $"{(h.DeviceError is null ? string.Empty : " (" + h.DeviceError + ")")}; " +
                    $"wait-on-ack {(h.WaitOnAck ? "on" : "off")}"),
            ("balloon", r.Balloon is not { } b || (b.HeldPages == 0 && b.InflatedDuringMigration == 0)
                ? "empty"
                : $"{b.HeldPages:N0} pages held ({b.Encoding}), {r.Transfer.PagesSkippedAsBallooned:N0} skipped; " +
                    $"{b.InflatedDuringMigration:N0} inflated, {b.DeflatedDuringMigration:N0} deflated during it; " +
                    $"{b.GuestEvents} guest events, {b.DeviceErrors} device errors" +
                    $"{(b.DeviceError is null ? string.Empty : " (" + b.DeviceError + ")")}"),
            ("reporting", r.Reporting is not { } rp
                ? "off"
                : $"{rp.PagesDiscarded:N0} pages discarded in {rp.Reports:N0} reports " +
                    $"({rp.PagesDiscardedDuringMigration:N0} during the migration, sent as zero), " +
                    $"{rp.PagesKeptPoisoned:N0} kept as poisoned; {rp.PagesSkipped:N0} skipped as discarded" +
                    (rp.SkipsDiscarded ? string.Empty : " (skipping off: sent as zero pages)")),
            ("verification", $"{r.Verification.PagesCompared:N0} pages compared, " +
                $"{r.Verification.MismatchedPages:N0} mismatched; self-check {r.Verification.GuestSelfCheck}"),
        };
        if (r.Error is not null)
        {
            rows.Add(("error", r.Error));
        }

        int width = rows.Max(x => x.Item1.Length);
        output.WriteLine();
        foreach (var (k, v) in rows)
        {
            output.WriteLine($"  {k.PadRight(width)}  {v}");
        }

        output.WriteLine();
    }
}
