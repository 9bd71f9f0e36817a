using System.Diagnostics;
using System.Globalization;
using System.Text;
using Migration.Shared.Balloon;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
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
    /// <c>--only reporting-cost</c> (and part of compare): the guest-side cost of reporting, on two allocation-heavy
    /// loads. <see cref="CostLoad.PageFault"/> is the shape Duyck measured (will-it-scale page_fault1 with huge pages:
    /// 0.8%; page_fault2 1.7%); <see cref="CostLoad.Churn"/> is harsher: it allocates, writes in full and frees blocks
    /// of up to 4 MiB at random over most of RAM, so the memory reporting gave away is soon allocated again.
    /// </summary>
    /// <remarks>
    /// Steady state, as a guest that has been up a while: each round boots one guest with reporting off and one with
    /// it on (Linux's pace), runs both until the reporting guest's boot flush is over (Linux reports a sixteenth of
    /// each free list per pass, 2 s apart, so the free memory at boot takes about 16 passes), then measures 10 s of
    /// each alone, the other paused, in an order that alternates between rounds. A fresh pair per round, so that
    /// neither setting keeps one guest's luck with its host memory. Five rounds per load.
    /// </remarks>
    private async Task MeasureReportingCostAsync(CancellationToken ct)
    {
        var refault = MeasureRefaultCost();
        _results.RefaultCost = refault;
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"bench: writing 1 GiB of guest RAM in full: first touch {refault.FirstTouchMs:F0} ms, resident " +
            $"{refault.RewriteMs:F0} ms, right after a discard {refault.SoonMs:F0} ms ({refault.SoonFaults:N0} " +
            $"host faults), {RefaultCost.LaterSeconds} s after a discard {refault.LaterMs:F0} ms " +
            $"({refault.LaterFaults:N0} host faults); this machine's own balloon reports free pages: " +
            $"{refault.HostReportsFreePages?.ToString() ?? "no balloon"}"));
        foreach (var load in new[] { CostLoad.PageFault, CostLoad.Churn })
        {
            for (int round = 1; round <= 5; round++)
            {
                using var off = BootCostGuest(load, reporting: false, round);
                using var on = BootCostGuest(load, reporting: true, round);
                off.Start();
                on.Start();
                var warm = Stopwatch.StartNew();
                while (on.ReportingDriver!.Passes < BootFlushPasses && warm.Elapsed < TimeSpan.FromSeconds(120))
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(200), ct);
                }

                off.Pause();
                on.Pause();
                string flushed = on.ReportingDriver.Passes >= BootFlushPasses
                    ? "boot flush over"
                    : "WARNING: boot flush not over (gave up waiting)";
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"bench: reporting cost, {LoadName(load)}, round {round}: {flushed} after " +
                    $"{warm.Elapsed.TotalSeconds:F0} s ({on.ReportingDriver.Passes} passes, " +
                    $"{on.Kernel.ReportedPages:N0} of {on.Kernel.FreePages:N0} free pages reported)"));
                foreach (bool reporting in round % 2 == 1 ? new[] { false, true } : [true, false])
                {
                    var s = await StretchAsync(reporting ? on : off, load, reporting, ct);
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"bench: reporting cost, {s.Load}, reporting {(reporting ? "on " : "off")}: " +
                        $"{s.PagesPerSecond:N0} pages/s written, vCPU {s.VcpuCpuSeconds:F1} s, reporting thread " +
                        $"{s.ReportingCpuSeconds:F2} s, device {s.DeviceCpuSeconds:F2} s, " +
                        $"{s.PagesReported:N0} pages reported, {s.HostFaults:N0} host page faults, " +
                        $"{s.AllocStalls:N0} allocation stalls, {s.FailedAllocations:N0} failed"));
                    _results.ReportingCost.Add(s);
                    Save();
                }

                off.Shutdown();
                on.Shutdown();
            }
        }
    }

    /// <summary>
    /// What a refault costs on this host, through guest RAM's own discard: 1 GiB written in full, discarded and
    /// written again at once, then again some seconds after the discard, counting the host's page faults of each
    /// write. A host that is itself a guest with free page reporting (a cloud VM) gives memory freed for long enough
    /// back to its own host, and a later refault pays for both layers; whether this host is such a guest is read
    /// from its virtio devices.
    /// </summary>
    private static RefaultCost MeasureRefaultCost()
    {
        using var ram = GuestRam.Allocate(1L << 30);
        long pages = ram.PageCount;
        (double Ms, long Faults) WriteAll()
        {
            long faults = ProcStat.ProcessMinorFaults();
            var sw = Stopwatch.StartNew();
            for (long pfn = 0; pfn < pages; pfn += 256)
            {
                ram.Pages(pfn, 256).Fill(0x5a);
            }

            return (sw.Elapsed.TotalMilliseconds, ProcStat.ProcessMinorFaults() - faults);
        }

        var first = WriteAll();
        var rewrite = WriteAll();
        ram.Discard(0, pages);
        var soon = WriteAll();
        ram.Discard(0, pages);
        Thread.Sleep(TimeSpan.FromSeconds(RefaultCost.LaterSeconds));
        var later = WriteAll();
        return new RefaultCost
        {
            FirstTouchMs = first.Ms,
            RewriteMs = rewrite.Ms,
            SoonMs = soon.Ms,
            SoonFaults = soon.Faults,
            LaterMs = later.Ms,
            LaterFaults = later.Faults,
            HostReportsFreePages = HostBalloonReports(),
        };
    }

    /// <summary>
    /// Whether this machine is a guest whose virtio-balloon negotiated free page reporting (feature bit 5), so its
    /// kernel gives free memory back to its own host; null where there is no virtio-balloon to ask.
    /// </summary>
    private static bool? HostBalloonReports()
    {
        const string devices = "/sys/bus/virtio/devices";
        if (!OperatingSystem.IsLinux() || !Directory.Exists(devices))
        {
            return null;
        }

        foreach (string dir in Directory.EnumerateDirectories(devices))
        {
            string id = Path.Combine(dir, "device");
            string features = Path.Combine(dir, "features");
            if (File.Exists(id) && File.ReadAllText(id).Trim() == "0x0005" && File.Exists(features))
            {
                string bits = File.ReadAllText(features).Trim(); // one character per feature bit, bit 0 first
                return bits.Length > 5 && bits[5] == '1';
            }
        }

        return null;
    }

    /// <summary>Passes after which Linux's pace has offered every free block of a freshly booted guest.</summary>
    private const int BootFlushPasses = 18;

    private VirtualMachine BootCostGuest(CostLoad load, bool reporting, int round)
    {
        long ram = options.Quick ? 1L << 30 : 8L << 30;
        var workload = load == CostLoad.Churn
            ? new WorkloadOptions
            {
                Kind = WorkloadKind.Churn,
                ChurnMaxOrder = 10,
                ChurnHeldBlocks = (int)Math.Min(4000, (ram >> 12) / 2 / 186 / 2),
                Seed = (ulong)round,
            }
            : new WorkloadOptions { Kind = WorkloadKind.PageFault, Seed = (ulong)round };
        return VirtualMachine.Boot(new GuestConfig
        {
            RamBytes = ram,
            Vcpus = 2,
            Workload = workload,
            Balloon = new BalloonOptions { Reporting = reporting },
        });
    }

    private static string LoadName(CostLoad load) => load == CostLoad.Churn ? "churn" : "page-fault";

    /// <summary>Resumes a paused cost guest, lets it run 2 s, measures 10 s, and pauses it again.</summary>
    private static async Task<ReportingCostSample> StretchAsync(VirtualMachine vm, CostLoad load, bool reporting,
        CancellationToken ct)
    {
        vm.Resume();
        await Task.Delay(TimeSpan.FromSeconds(2), ct);
        var cpuBefore = ThreadCpu.GuestThreads();
        long writesBefore = vm.PageWrites;
        long reportedBefore = vm.ReportingDriver?.PagesReported ?? 0;
        long faultsBefore = ProcStat.ProcessMinorFaults();
        var kernelBefore = vm.Kernel.Counters();
        var sw = Stopwatch.StartNew();
        await Task.Delay(TimeSpan.FromSeconds(10), ct);
        long writes = vm.PageWrites - writesBefore;
        double seconds = sw.Elapsed.TotalSeconds;
        long faults = ProcStat.ProcessMinorFaults() - faultsBefore;
        var kernelAfter = vm.Kernel.Counters();
        var cpuAfter = ThreadCpu.GuestThreads();
        vm.Pause();
        double Cpu(string thread) => cpuAfter.GetValueOrDefault(thread) - cpuBefore.GetValueOrDefault(thread);
        return new ReportingCostSample
        {
            Load = LoadName(load),
            Reporting = reporting,
            Seconds = seconds,
            PageWrites = writes,
            VcpuCpuSeconds = Cpu("vcpus"),
            ReportingCpuSeconds = Cpu("page reporting"),
            DeviceCpuSeconds = Cpu("balloon device"),
            PagesReported = (vm.ReportingDriver?.PagesReported ?? 0) - reportedBefore,
            HostFaults = faults,
            AllocStalls = kernelAfter.AllocStalls - kernelBefore.AllocStalls,
            FailedAllocations = kernelAfter.OomKills - kernelBefore.OomKills,
        };
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
        if (results.Compare.Count > 0)
        {
            md.AppendLine(inv, $"## Hinting, reporting, ballooning: {(results.Quick ? 1 : 8)} GiB guests, loopback, " +
                $"medians of {results.Repeat}");
            md.AppendLine();
            md.AppendLine("Time and bytes are ratios against the same guest migrated with nothing. Skipped pages: by " +
                "hint / as discarded / as ballooned. Driver CPU: the guest's hint driver, page reporting and inflate " +
                "threads plus the device threads, from boot to the end of the migration (for reporting that " +
                "includes the wait until the guest had reported its free memory). RSS: the source process when the " +
                "migration began.");
        }
        else
        {
            md.AppendLine(inv, $"## The guest-side cost of free page reporting: {(results.Quick ? 1 : 8)} GiB guests");
        }

        md.AppendLine();
        foreach (var group in results.ReportingCost.GroupBy(s => s.Load ?? "churn"))
        {
            var offRuns = group.Where(s => !s.Reporting).ToList();
            var onRuns = group.Where(s => s.Reporting).ToList();
            double off = Median(offRuns.Select(s => s.PagesPerSecond));
            double on = Median(onRuns.Select(s => s.PagesPerSecond));
            string cost = (off > 0 ? (1 - (on / off)) * 100 : 0).ToString("F1", inv);
            // Stretches are saved a round (one off, one on) at a time: the rounds' own ratios show the noise.
            var pairs = group.Chunk(2).Where(p => p.Length == 2 && p.Any(x => x.Reporting) && p.Any(x => !x.Reporting))
                .Select(p => p.Single(x => x.Reporting).PagesPerSecond / p.Single(x => !x.Reporting).PagesPerSecond)
                .Order()
                .ToList();
            string pairRange = pairs.Count > 0
                ? $"; the rounds' own ratios {pairs[0].ToString("F3", inv)} to {pairs[^1].ToString("F3", inv)}"
                : string.Empty;
            double onFaults = Median(onRuns.Select(s => (double)s.HostFaults));
            double offFaults = Median(offRuns.Select(s => (double)s.HostFaults));
            string PerStretch(List<ReportingCostSample> runs) =>
                string.Join(", ", runs.Select(s => (s.PagesPerSecond / 1e6).ToString("F2", inv)));
            md.AppendLine(inv, $"Guest cost of reporting, {group.Key} load ({CostLoadDescription(group.Key)}): " +
                $"{off:N0} pages/s written without reporting, {on:N0} with it (steady state after reporting's boot " +
                $"flush; medians of {onRuns.Count} x 10 s each, interleaved; without / with, per stretch: " +
                $"{PerStretch(offRuns)} / {PerStretch(onRuns)} M): throughput ratio {Ratio(on, off)}{pairRange}, " +
                $"a cost of {cost}% (goal: within 2%; Duyck measured 0.8-1.7%). " +
                $"Per 10 s with reporting: {Median(onRuns.Select(s => (double)s.PagesReported)):N0} pages reported, " +
                $"reporting thread {Median(onRuns.Select(s => s.ReportingCpuSeconds)):F2} CPU s, device thread " +
                $"{Median(onRuns.Select(s => s.DeviceCpuSeconds)):F2} CPU s, host page faults {onFaults:N0} " +
                $"(without: {offFaults:N0}).{RefaultBand(results, onFaults - offFaults, onRuns)}");
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

    /// <summary>What the host faults reporting added would cost at this host's measured refault prices.</summary>
    private static string RefaultBand(BenchResults results, double faults, List<ReportingCostSample> on)
    {
        if (results.RefaultCost is not { } refault || on.Count == 0)
        {
            return string.Empty;
        }

        var (soon, later) = refault.ShareOf(faults, Median(on.Select(s => s.VcpuCpuSeconds)));
        var (soonMs, laterMs) = refault.MsPerFault;
        string nested = refault.HostReportsFreePages switch
        {
            true => "; this machine is itself a guest whose balloon reports free pages to its own host",
            false => "; this machine's own balloon does not report free pages",
            null => string.Empty,
        };
        return string.Create(CultureInfo.InvariantCulture,
            $" At this host's refault prices (1 GiB written in full: {refault.RewriteMs:F0} ms resident, " +
            $"{refault.SoonMs:F0} ms right after a discard, {soonMs:F3} ms per host fault; {refault.LaterMs:F0} ms " +
            $"{RefaultCost.LaterSeconds} s after it, {laterMs:F3} ms per fault{nested}), the {faults:N0} extra " +
            $"faults cost {soon * 100:F1}% of the vCPUs' time if the host still held the memory and " +
            $"{later * 100:F1}% if it had gone to the layer below.");
    }

    private static string CostLoadDescription(string load) => load == "page-fault"
        ? "will-it-scale page_fault1 with huge pages: each vCPU maps 128 MiB in 2 MiB blocks, writes it, unmaps it"
        : "blocks up to 4 MiB at random over most of RAM, written in full";

    private static string Ratio(double value, double baseline) =>
        baseline > 0 ? (value / baseline).ToString("F3", CultureInfo.InvariantCulture) : "-";

    /// <summary>CPU of the mechanisms' own threads (drivers and devices), all vCPUs excluded.</summary>
    private static double DriverCpu(MigrationReport report) =>
        report.GuestThreadCpuSeconds?.Where(t => t.Key != "vcpus").Sum(t => t.Value) ?? 0;

    private static double MedianOf(List<BenchRun> runs, Func<MigrationReport, double> value) =>
        Median(runs.Where(r => r.Ok).Select(r => value(r.Source!)));
}

/// <summary>The loads <c>reporting-cost</c> measures on.</summary>
internal enum CostLoad
{
    /// <summary>will-it-scale page_fault1 with huge pages: each vCPU maps, writes and unmaps 128 MiB, again.</summary>
    PageFault,

    /// <summary>Random blocks of up to 4 MiB allocated, written in full and freed over most of RAM.</summary>
    Churn,
}

/// <summary>Writing 1 GiB of guest RAM in full on this host, in ms: how much a refault of discarded memory costs.</summary>
internal sealed record RefaultCost
{
    /// <summary>Seconds between the discard and the late refault: more than Linux's 2 s reporting delay.</summary>
    public const int LaterSeconds = 5;

    public double FirstTouchMs { get; init; }

    /// <summary>The pages resident: the write alone.</summary>
    public double RewriteMs { get; init; }

    /// <summary>Written again at once after a discard: the host's faults on memory its kernel still holds.</summary>
    public double SoonMs { get; init; }

    public long SoonFaults { get; init; }

    /// <summary>
    /// Written again <see cref="LaterSeconds"/> after a discard: where the host is itself a guest whose kernel reports
    /// free memory to its own host, the memory went back there and each fault pays for both layers.
    /// </summary>
    public double LaterMs { get; init; }

    public long LaterFaults { get; init; }

    /// <summary>This machine is a guest whose balloon reports free pages to its host; null: no balloon to ask.</summary>
    public bool? HostReportsFreePages { get; init; }

    /// <summary>ms a fault added to the write, at once after a discard and later.</summary>
    public (double Soon, double Later) MsPerFault =>
        (PerFault(SoonMs, SoonFaults), PerFault(LaterMs, LaterFaults));

    /// <summary>The share of <paramref name="cpuSeconds"/> that <paramref name="faults"/> refaults cost.</summary>
    public (double Soon, double Later) ShareOf(double faults, double cpuSeconds)
    {
        var (soon, later) = MsPerFault;
        double Share(double ms) => cpuSeconds > 0 ? Math.Max(0, faults) * ms / 1000 / cpuSeconds : 0;
        return (Share(soon), Share(later));
    }

    private double PerFault(double ms, long faults) => faults > 0 ? Math.Max(0, ms - RewriteMs) / faults : 0;
}

/// <summary>One timed stretch of an allocation-heavy guest, reporting off or on.</summary>
internal sealed record ReportingCostSample
{
    /// <summary>"page-fault" or "churn" (results saved before there were two loads have none: churn).</summary>
    public string? Load { get; init; }

    public bool Reporting { get; init; }

    public double Seconds { get; init; }

    /// <summary>Pages the vCPUs allocated and wrote in full (each a first touch, as a page-fault benchmark's).</summary>
    public long PageWrites { get; init; }

    public double VcpuCpuSeconds { get; init; }

    public double ReportingCpuSeconds { get; init; }

    /// <summary>The balloon device's thread: it serves the reports and discards (madvise) their pages.</summary>
    public double DeviceCpuSeconds { get; init; }

    public long PagesReported { get; init; }

    /// <summary>Minor page faults of the whole process on the host in the stretch.</summary>
    public long HostFaults { get; init; }

    /// <summary>Allocations that found no free block and went to the slow path (the guest's allocstall).</summary>
    public long AllocStalls { get; init; }

    /// <summary>Allocations that failed even so (the workload then frees a block instead of writing one).</summary>
    public long FailedAllocations { get; init; }

    public double PagesPerSecond => Seconds > 0 ? PageWrites / Seconds : 0;
}
