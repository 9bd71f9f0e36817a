using System.Diagnostics;
using System.Globalization;
using System.Text;
using Migration.Shared.Balloon;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;

namespace Migration.Bench;

/// <summary>One inflate and deflate of the balloon scenario, in this process.</summary>
internal sealed record BalloonTiming
{
    public required string Encoding { get; init; }

    public long RamBytes { get; init; }

    public long Pages { get; init; }

    public double InflateMs { get; init; }

    public double DeflateMs { get; init; }

    public long InflateRequests { get; init; }

    public long RssBeforeBytes { get; init; }

    public long RssInflatedBytes { get; init; }

    public long RssDeflatedBytes { get; init; }

    public long DeviceErrors { get; init; }
}

/// <summary>
/// The balloon scenario: a guest of 8 GiB (1 GiB with --quick) that filled 90% of its RAM and freed it (so its RAM
/// is resident), inflated to 7/8 of its RAM and deflated again with each encoding, the driver and device threads as
/// a running VM has them; then migrations of that guest unballooned, ballooned, and ballooned with the balloon sent as
/// zero pages as QEMU does (hints off, so the balloon is the only thing skipped).
/// </summary>
internal sealed partial class BenchRunner
{
    private static readonly TimeSpan BalloonTimeout = TimeSpan.FromMinutes(5);

    private async Task RunBalloonAsync(CancellationToken ct)
    {
        long ram = options.Quick ? 1L << 30 : 8L << 30;
        long pages = (ram >> 12) * 7 / 8;
        for (int repeat = 1; repeat <= options.Repeat; repeat++)
        {
            foreach (var encoding in Enum.GetValues<BalloonEncoding>())
            {
                var timing = await TimeBalloonAsync(ram, pages, encoding, ct);
                output.WriteLine($"bench: balloon {timing.Encoding}: inflate {timing.InflateMs:F0} ms, " +
                    $"deflate {timing.DeflateMs:F0} ms, {timing.InflateRequests:N0} requests, RSS " +
                    $"{timing.RssBeforeBytes >> 20:N0} -> {timing.RssInflatedBytes >> 20:N0} -> " +
                    $"{timing.RssDeflatedBytes >> 20:N0} MiB");
                _results.BalloonTimings.Add(timing);
                Save();
            }
        }

        string size = $"{(ram * 7 / 8) >> 20}MiB";
        string name = options.Quick ? "balloon-1g" : "balloon-8g";
        for (int repeat = 1; repeat <= options.Repeat; repeat++)
        {
            // unballooned; ballooned and skipped (ours); ballooned and sent as zero pages (QEMU's way)
            foreach (string variant in new[] { "-none", string.Empty, "-zero-pages" })
            {
                string[] args = variant switch
                {
                    "-none" => ["--workload", "memhog"],
                    "-zero-pages" => ["--workload", "memhog", "--balloon", size, "--balloon-encoding", "chunks",
                        "--skip-ballooned", "off"],
                    _ => ["--workload", "memhog", "--balloon", size, "--balloon-encoding", "chunks"],
                };
                var run = await RunMigrationAsync(name + variant, ram, args, BenchScenario.Uncapped, hints: false,
                    repeat, channels: 2, ct);
                _results.BalloonMigrations.Add(run);
                Save();
            }
        }
    }

    private static async Task<BalloonTiming> TimeBalloonAsync(long ram, long pages, BalloonEncoding encoding,
        CancellationToken ct)
    {
        var config = new GuestConfig
        {
            RamBytes = ram,
            Vcpus = 2,
            Workload = new WorkloadOptions { Kind = WorkloadKind.Memhog, IdleDirtyPagesPerSecond = 0 },
            Balloon = new BalloonOptions { Encoding = encoding },
        };
        using var vm = VirtualMachine.Boot(config);
        vm.Start();
        var warm = Stopwatch.StartNew();
        while (!vm.IsWarm && warm.Elapsed < BalloonTimeout)
        {
            await Task.Delay(50, ct);
        }

        long before = Environment.WorkingSet;
        double inflate = await MoveBalloonAsync(vm, pages, ct);
        long inflated = Environment.WorkingSet;
        long requests = vm.Balloon.Stats.InflateRequests;
        double deflate = await MoveBalloonAsync(vm, 0, ct);
        var stats = vm.Balloon.Stats;
        vm.Shutdown();
        return new BalloonTiming
        {
            Encoding = encoding.ToString().ToLowerInvariant(),
            RamBytes = ram,
            Pages = pages,
            InflateMs = inflate,
            DeflateMs = deflate,
            InflateRequests = requests,
            RssBeforeBytes = before,
            RssInflatedBytes = inflated,
            RssDeflatedBytes = Environment.WorkingSet,
            DeviceErrors = stats.DeviceErrors,
        };
    }

    /// <summary>Sets the target and waits (polling every 1 ms) until the device holds exactly that many pages.</summary>
    private static async Task<double> MoveBalloonAsync(VirtualMachine vm, long pages, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        vm.Balloon.SetTargetPages(pages);
        while ((vm.Balloon.ActualPages != pages || vm.Balloon.HeldPages != pages) && sw.Elapsed < BalloonTimeout)
        {
            await Task.Delay(1, ct);
        }

        if (vm.Balloon.ActualPages != pages)
        {
            throw new TimeoutException($"the balloon reached {vm.Balloon.ActualPages} of {pages} pages");
        }

        return sw.Elapsed.TotalMilliseconds;
    }

    /// <summary>The balloon section of results.md: medians per encoding, ratios against page numbers.</summary>
    public static string BalloonMarkdown(BenchResults results)
    {
        if (results.BalloonTimings.Count == 0)
        {
            return string.Empty;
        }

        var inv = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        var byEncoding = results.BalloonTimings.GroupBy(t => t.Encoding).ToList();
        double baseline =
            Median(results.BalloonTimings.Where(t => t.Encoding == "pagenumbers").Select(t => t.InflateMs));
        var first = results.BalloonTimings[0];
        md.AppendLine(string.Create(inv,
            $"## Balloon: inflate {first.Pages * 4096 >> 20:N0} MiB of a {first.RamBytes >> 30} GiB guest, deflate it"));
        md.AppendLine();
        md.AppendLine("| encoding | inflate ms | ms per GiB | vs page numbers | deflate ms | requests | " +
            "RSS before / inflated / deflated (MiB) |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|---|");
        foreach (var g in byEncoding)
        {
            double inflate = Median(g.Select(t => t.InflateMs));
            double gib = first.Pages * 4096.0 / (1L << 30);
            var last = g.Last();
            md.AppendLine(inv, $"| {g.Key} | {inflate:F0} | {inflate / gib:F0} | " +
                $"{(baseline > 0 ? (inflate / baseline).ToString("F3", inv) : "-")} | " +
                $"{Median(g.Select(t => t.DeflateMs)):F0} | {last.InflateRequests:N0} | " +
                $"{last.RssBeforeBytes >> 20:N0} / {last.RssInflatedBytes >> 20:N0} / " +
                $"{last.RssDeflatedBytes >> 20:N0} |");
        }

        md.AppendLine();
        md.AppendLine(string.Create(inv, $"Medians of {results.Repeat} run(s)") +
            "; published (Liang Li's v3): 4126 ms with page numbers, 590 ms with a bitmap (ratio 0.14).");
        if (results.BalloonMigrations.Count > 0)
        {
            md.AppendLine();
            md.AppendLine("| migration (memhog guest, hints off) | total ms | first round ms | bytes on wire | " +
                "pages skipped as ballooned | zero pages sent |");
            md.AppendLine("|---|---:|---:|---:|---:|---:|");
            foreach (var g in results.BalloonMigrations.Where(r => r.Ok).GroupBy(r => r.Scenario))
            {
                var reports = g.Select(r => r.Source!).ToList();
                md.AppendLine(inv, $"| {g.Key} | {Median(reports.Select(r => r.Timing.TotalMs)):F0} | " +
                    $"{Median(reports.Select(r => r.Rounds.Count > 0 ? r.Rounds[0].Ms : 0)):F0} | " +
                    $"{Median(reports.Select(r => (double)r.Transfer.BytesOnWire)):N0} | " +
                    $"{reports[^1].Transfer.PagesSkippedAsBallooned:N0} | {reports[^1].Transfer.PagesZero:N0} |");
            }
        }

        md.AppendLine();
        return md.ToString();
    }

    private static double Median(IEnumerable<double> values) => Peers.Spread.Of(values)?.Median ?? 0;
}
