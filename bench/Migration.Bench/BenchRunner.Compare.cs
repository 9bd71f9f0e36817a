using System.Diagnostics;
using System.Globalization;
using System.Text;
using Migration.Shared.Balloon;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Reporting;

namespace Migration.Bench;

/// <summary>One guest of the comparison: a workload as <c>migrate</c> flags and the share of RAM it leaves free.</summary>
internal sealed record CompareGuest(string Name, string Description, IReadOnlyList<string> Args, double FreeShare);

/// <summary>One way of not sending free memory (or none), as <c>migrate</c> flags.</summary>
internal sealed record CompareMechanism(string Name, bool Hints, bool Reporting, bool Balloon);

/// <summary>
/// <c>--only compare</c>: every guest migrated with nothing, free page hinting, free page reporting (after the guest
/// reported what it will, at Linux's pace), both, and a balloon inflated to the guest's free memory. Each run is a
/// fresh source and target process pair over loopback, uncapped, and the mechanisms of one guest are interleaved
/// within each repeat so drift on a shared machine hits them alike.
/// </summary>
internal sealed partial class BenchRunner
{
    /// <summary>How long a reporting guest may take to report its free memory at Linux's pace (8 GiB: ~35 s).</summary>
    private const int ReportingAwaitSeconds = 180;

    public static IReadOnlyList<CompareMechanism> CompareMechanisms { get; } =
    [
        new("nothing", Hints: false, Reporting: false, Balloon: false),
        new("hinting", Hints: true, Reporting: false, Balloon: false),
        new("reporting", Hints: false, Reporting: true, Balloon: false),
        new("both", Hints: true, Reporting: true, Balloon: false),
        new("balloon", Hints: false, Reporting: false, Balloon: true),
    ];

    /// <summary>The comparison's guests: idle, stale, busy as the main scenarios have them, stale with
    /// init_on_alloc, and QEMU's A-B test guest.</summary>
    public static IReadOnlyList<CompareGuest> CompareGuests(bool quick)
    {
        var scenarios = BenchScenario.All(quick);
        return
        [
            new("idle", scenarios[0].Description, scenarios[0].WorkloadArgs, 0.9),
            new("stale", scenarios[1].Description, scenarios[1].WorkloadArgs, 0.9),
            new("stale-init-on-alloc", "stale, in a guest that zeroes every page it allocates (init_on_alloc=1)",
                [.. scenarios[1].WorkloadArgs, "--init-on-alloc", "on"], 0.9),
            new("busy", scenarios[2].Description, scenarios[2].WorkloadArgs, 0.65),
            new("ab", "QEMU's A-B guest: 64 MiB incremented a byte per page in order, the rest idle",
                ["--workload", "ab", "--ab-mib", "64", "--page-cache-share", "0.045"], 0.85),
        ];
    }

    private async Task RunCompareAsync(CancellationToken ct)
    {
        long ram = options.Quick ? 1L << 30 : 8L << 30;
        string size = options.Quick ? "1g" : "8g";
        for (int repeat = 1; repeat <= options.Repeat; repeat++)
        {
            foreach (var guest in CompareGuests(options.Quick))
            {
                foreach (var mechanism in CompareMechanisms)
                {
                    var args = new List<string>(guest.Args);
                    if (mechanism.Reporting)
                    {
                        args.AddRange(["--balloon-reporting", "on",
                            "--await-reporting", ReportingAwaitSeconds.ToString(CultureInfo.InvariantCulture)]);
                    }

                    if (mechanism.Balloon)
                    {
                        long balloon = (long)(ram * guest.FreeShare) >> 20;
                        args.AddRange(["--balloon", $"{balloon}MiB", "--balloon-encoding", "chunks"]);
                    }

                    var run = await RunMigrationAsync($"compare-{guest.Name}-{size}-{mechanism.Name}", ram, args,
                        BenchScenario.Uncapped, mechanism.Hints, repeat, channels: 2, ct);
                    _results.Compare.Add(run);
                    Save();
                }
            }
        }
    }

    /// <summary>
    /// <c>--only reporting-cost</c> (and part of compare): the guest-side cost of reporting (Duyck measured 0.8-1.7%
    /// on page-fault benchmarks). A churn guest allocates, writes in full and frees blocks of up to 4 MiB over half its
    /// RAM, so freed memory is reported, discarded and faulted in again; 10 s at a time with reporting off and on
    /// (Linux's pace), five of each, interleaved.
    /// </summary>
    private async Task MeasureReportingCostAsync(CancellationToken ct)
    {
        // A first stretch, thrown away, tiers up the workload's code; then five pairs, the order alternating so that
        // drift on a shared machine hits both settings alike.
        await TimeChurnAsync(reporting: false, round: 0, ct);
        for (int round = 1; round <= 5; round++)
        {
            foreach (bool reporting in round % 2 == 1 ? new[] { false, true } : [true, false])
            {
                var sample = await TimeChurnAsync(reporting, round, ct);
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"bench: reporting cost, reporting {(reporting ? "on " : "off")}: {sample.PagesPerSecond:N0} " +
                    $"pages/s written, vCPU {sample.VcpuCpuSeconds:F1} s, reporting thread " +
                    $"{sample.ReportingCpuSeconds:F2} s, {sample.PagesReported:N0} pages reported"));
                _results.ReportingCost.Add(sample);
                Save();
            }
        }
    }

    /// <summary>One 10 s stretch of the churn guest, after 3 s in which its working set fills.</summary>
    private async Task<ReportingCostSample> TimeChurnAsync(bool reporting, int round, CancellationToken ct)
    {
        long ram = options.Quick ? 1L << 30 : 8L << 30;
        var config = new GuestConfig
        {
            RamBytes = ram,
            Vcpus = 2,
            Workload = new WorkloadOptions
            {
                Kind = WorkloadKind.Churn,
                ChurnMaxOrder = 10,
                ChurnHeldBlocks = (int)Math.Min(4000, (ram >> 12) / 2 / 186 / 2),
                Seed = (ulong)(round + 1),
            },
            Balloon = new BalloonOptions { Reporting = reporting },
        };
        using var vm = VirtualMachine.Boot(config);
        vm.Start();
        await Task.Delay(TimeSpan.FromSeconds(3), ct); // the working set fills; the first passes run
        var cpuBefore = ThreadCpu.GuestThreads();
        long writesBefore = vm.PageWrites;
        long reportedBefore = vm.ReportingDriver?.PagesReported ?? 0;
        var sw = Stopwatch.StartNew();
        await Task.Delay(TimeSpan.FromSeconds(10), ct);
        long writes = vm.PageWrites - writesBefore;
        double seconds = sw.Elapsed.TotalSeconds;
        var cpuAfter = ThreadCpu.GuestThreads();
        var sample = new ReportingCostSample
        {
            Reporting = reporting,
            Seconds = seconds,
            PageWrites = writes,
            VcpuCpuSeconds = cpuAfter.GetValueOrDefault("vcpus") - cpuBefore.GetValueOrDefault("vcpus"),
            ReportingCpuSeconds = cpuAfter.GetValueOrDefault("page reporting")
                - cpuBefore.GetValueOrDefault("page reporting"),
            PagesReported = (vm.ReportingDriver?.PagesReported ?? 0) - reportedBefore,
        };
        vm.Shutdown();
        return sample;
    }

    /// <summary>The comparison's section of results.md: one table per guest, medians, ratios against nothing.</summary>
    public static string CompareMarkdown(BenchResults results)
    {
        if (results.Compare.Count == 0 && results.ReportingCost.Count == 0)
        {
            return string.Empty;
        }

        var inv = CultureInfo.InvariantCulture;
        string size = results.Quick ? "1g" : "8g";
        var md = new StringBuilder();
        md.AppendLine(inv, $"## Hinting, reporting, ballooning: {(results.Quick ? 1 : 8)} GiB guests, loopback, " +
            $"medians of {results.Repeat}");
        md.AppendLine();
        md.AppendLine("Time and bytes are ratios against the same guest migrated with nothing. Skipped pages: by " +
            "hint / as discarded / as ballooned. Driver CPU: the guest's hint driver, page reporting and inflate " +
            "threads plus the device threads, from boot to the end of the migration (for reporting that includes " +
            "the wait until the guest had reported its free memory). RSS: the source process when the migration " +
            "began.");
        md.AppendLine();
        if (results.ReportingCost.Count > 0)
        {
            var offRuns = results.ReportingCost.Where(s => !s.Reporting).ToList();
            var onRuns = results.ReportingCost.Where(s => s.Reporting).ToList();
            double off = Median(offRuns.Select(s => s.PagesPerSecond));
            double on = Median(onRuns.Select(s => s.PagesPerSecond));
            double thread = Median(onRuns.Select(s => s.ReportingCpuSeconds));
            string cost = (off > 0 ? (1 - (on / off)) * 100 : 0).ToString("F1", inv);
            md.AppendLine(inv, $"Guest cost of reporting on an allocation-heavy load (churn, blocks up to 4 MiB, " +
                $"written in full): {off:N0} pages/s written without reporting, {on:N0} with it (medians of " +
                $"{onRuns.Count} x 10 s each, interleaved; without / with, per stretch: " +
                $"{string.Join(", ", offRuns.Select(s => (s.PagesPerSecond / 1e6).ToString("F2", inv)))} / " +
                $"{string.Join(", ", onRuns.Select(s => (s.PagesPerSecond / 1e6).ToString("F2", inv)))} M): " +
                $"throughput ratio {Ratio(on, off)}, a cost of {cost}% (goal: within 2%; Duyck measured 0.8-1.7%). The reporting thread used {thread:F2} CPU s per 10 s.");
            md.AppendLine();
        }

        foreach (var guest in CompareGuests(results.Quick))
        {
            var runs = CompareMechanisms
                .Select(m => (m, results.Compare.Where(r => r.Scenario == $"compare-{guest.Name}-{size}-{m.Name}")
                    .ToList()))
                .Where(x => x.Item2.Count > 0)
                .ToList();
            if (runs.Count == 0)
            {
                continue;
            }

            double baseTime = MedianOf(runs[0].Item2, r => r.Timing.TotalMs);
            double baseBytes = MedianOf(runs[0].Item2, r => r.Transfer.BytesOnWire);
            md.AppendLine(inv, $"### {guest.Name}: {guest.Description}");
            md.AppendLine();
            md.AppendLine("| mechanism | verified | total ms | vs nothing | downtime ms | first round ms | " +
                "MB on wire | vs nothing | skipped (hint / discarded / balloon) | driver CPU s | source RSS MiB |");
            md.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|");
            foreach (var (m, list) in runs)
            {
                var ok = list.Where(r => r.Ok).Select(r => r.Source!).ToList();
                string verified = $"{ok.Count}/{list.Count}";
                if (ok.Count == 0)
                {
                    md.AppendLine(inv, $"| {m.Name} | {verified} | | | | | | | | | |");
                    continue;
                }

                double time = Median(ok.Select(r => r.Timing.TotalMs));
                double bytes = Median(ok.Select(r => (double)r.Transfer.BytesOnWire));
                var last = ok[^1];
                md.AppendLine(inv, $"| {m.Name} | {verified} | {time:F0} | {Ratio(time, baseTime)} | " +
                    $"{Median(ok.Select(r => r.Timing.DowntimeMs)):F0} | " +
                    $"{Median(ok.Select(r => r.Rounds.Count > 0 ? r.Rounds[0].Ms : 0)):F0} | {bytes / 1e6:F1} | " +
                    $"{Ratio(bytes, baseBytes)} | {last.Transfer.PagesSkippedByHints:N0} / " +
                    $"{last.Transfer.PagesSkippedAsDiscarded:N0} / {last.Transfer.PagesSkippedAsBallooned:N0} | " +
                    $"{Median(ok.Select(DriverCpu)):F2} | {Median(ok.Select(r => (double)(r.Process?.RssAtMigrationStartBytes ?? 0))) / (1 << 20):N0} |");
            }

            md.AppendLine();
        }

        return md.ToString();
    }

    private static string Ratio(double value, double baseline) =>
        baseline > 0 ? (value / baseline).ToString("F3", CultureInfo.InvariantCulture) : "-";

    /// <summary>CPU of the mechanisms' own threads (drivers and devices), all vCPUs excluded.</summary>
    private static double DriverCpu(MigrationReport report) =>
        report.GuestThreadCpuSeconds?.Where(t => t.Key != "vcpus").Sum(t => t.Value) ?? 0;

    private static double MedianOf(List<BenchRun> runs, Func<MigrationReport, double> value) =>
        Median(runs.Where(r => r.Ok).Select(r => value(r.Source!)));
}

/// <summary>One timed stretch of the allocation-heavy guest, reporting off or on.</summary>
internal sealed record ReportingCostSample
{
    public bool Reporting { get; init; }

    public double Seconds { get; init; }

    /// <summary>Pages the vCPUs allocated and wrote in full (each a first touch, as a page-fault benchmark's).</summary>
    public long PageWrites { get; init; }

    public double VcpuCpuSeconds { get; init; }

    public double ReportingCpuSeconds { get; init; }

    public long PagesReported { get; init; }

    public double PagesPerSecond => Seconds > 0 ? PageWrites / Seconds : 0;
}
