using System.Globalization;
using System.Text;

namespace Migration.Bench;

/// <summary>One busy guest of the convergence benchmark: its write rate as a multiple of the link's.</summary>
internal sealed record ConvergeGuest(BenchLink Link, double LinkBytesPerSecond, double Multiple)
{
    /// <summary>Page writes per second the busy workload is asked for.</summary>
    public double WriteBytesPerSecond => LinkBytesPerSecond * Multiple;

    public string Name => string.Create(CultureInfo.InvariantCulture, $"converge-{Link.Name}-{Multiple:0.#}x");
}

/// <summary>One way of making a busy guest finish, as the source's flags.</summary>
internal sealed record ConvergeSetup(string Name, string[] Args)
{
    /// <summary>
    /// Delta pages' cache: the busy guests' whole working set (half of their 1 GiB), so every page sent again finds
    /// its copy: the size a user who knows the working set would pick.
    /// </summary>
    public const int DeltaCacheMib = 512;
}

/// <summary>
/// <c>--only converge</c>: busy guests whose writes run at 0.5, 1, 2 and 4 times the link (1 and 10 Gbit/s emulated),
/// each migrated with no method, auto-converge, the dirty limit, delta pages alone and delta pages with the dirty
/// limit, interleaved within a repeat. Each row says whether it completed, its total time, downtime, bytes and
/// rounds, the most it throttled, what deltas saved, and what the guest lost: its work per second over the migration
/// against its first round's, before anything slowed it.
/// </summary>
internal sealed partial class BenchRunner
{
    /// <summary>The setups compared: each convergence method, delta pages alone, and deltas with the default method.</summary>
    public static readonly ConvergeSetup[] ConvergeSetups =
    [
        new("none", ["--converge", "none"]),
        new("auto", ["--converge", "auto"]),
        new("dirtylimit", ["--converge", "dirtylimit"]),
        new("delta", ["--converge", "none", "--delta-cache-mib", $"{ConvergeSetup.DeltaCacheMib}"]),
        new("dirtylimit+delta", ["--converge", "dirtylimit", "--delta-cache-mib", $"{ConvergeSetup.DeltaCacheMib}"]),
    ];

    public static IReadOnlyList<ConvergeGuest> ConvergeGuests() =>
    [
        .. new[] { 0.5, 1, 2, 4 }.Select(m => new ConvergeGuest(new BenchLink("1gbit", "1Gbit"), 125e6, m)),
        .. new[] { 0.5, 1, 2, 4 }.Select(m => new ConvergeGuest(new BenchLink("10gbit", "10Gbit"), 1.25e9, m)),
    ];

    private async Task RunConvergeAsync(CancellationToken ct)
    {
        long ram = 1L << 30;
        for (int repeat = 1; repeat <= options.Repeat; repeat++)
        {
            foreach (var guest in ConvergeGuests())
            {
                // the setups' order turns with the repeat, so none of them always runs first on a warm machine
                var setups = ConvergeSetups.Skip(repeat % ConvergeSetups.Length)
                    .Concat(ConvergeSetups.Take(repeat % ConvergeSetups.Length));
                foreach (var setup in setups)
                {
                    string rate = string.Create(CultureInfo.InvariantCulture, $"{guest.WriteBytesPerSecond:F0}B/s");
                    var run = await RunMigrationAsync($"{guest.Name}-{setup.Name}", ram,
                        [
                            "--workload", "busy", "--busy-dirty-rate", rate, "--busy-working-set", "0.5",
                            "--busy-hot-set", "1",
                        ],
                        guest.Link, hints: true, repeat, channels: 2, ct,
                        sourceArgs: [.. setup.Args, "--max-rounds", "60", "--timeout-seconds", "120"]);
                    _results.Converge.Add(run);
                    Save();
                    output.WriteLine("     " + DescribeConverge(run));
                }
            }
        }
    }

    /// <summary>Completed or why not, and what the method cost the guest.</summary>
    public static string DescribeConverge(BenchRun run)
    {
        if (run.Source is not { } r)
        {
            return $"no report: {run.Error}";
        }

        var c = r.Convergence;
        string outcome = string.Create(CultureInfo.InvariantCulture,
            $"{(run.Ok ? "completed" : "did not complete")} in {r.Rounds.Count} rounds, max throttle " +
            $"{c.MaxThrottlePercent:F0}%, {r.Transfer.PagesDelta:N0} pages as deltas, guest lost " +
            $"{GuestLoss(r) * 100:F0}% of its work");
        return run.Ok ? outcome : $"{outcome}: {run.Error}";
    }

    /// <summary>
    /// The share of its work the guest lost during the migration: its operations per second over the migration against
    /// its pace running alone just before (as QEMU's side measures its guest), or, in a report without that, against
    /// its first round's.
    /// </summary>
    public static double GuestLoss(Shared.Reporting.MigrationReport report)
    {
        var c = report.Convergence;
        double baseline = c.GuestOpsPerSecBefore ?? c.GuestOpsPerSecFirstRound;
        return baseline > 0 ? Math.Max(0, 1 - (c.GuestOpsPerSecDuring / baseline)) : 0;
    }

    /// <summary>The convergence table of results.md.</summary>
    public static void WriteConverge(StringBuilder md, BenchResults results)
    {
        if (results.Converge.Count == 0)
        {
            return;
        }

        var inv = CultureInfo.InvariantCulture;
        md.AppendLine("## Convergence: busy guests against the link");
        md.AppendLine();
        md.AppendLine("1 GiB guests, 2 vCPUs, the busy workload writing half of RAM uniformly at a multiple of the " +
            "link's rate (the asked rate; the dirty rate column is what the first round measured), downtime limit " +
            "300 ms, at most 60 rounds. 'delta' is delta pages (XBZRLE) with a " +
            $"{ConvergeSetup.DeltaCacheMib} MiB cache (the working set) and no throttle; 'deltas' counts the pages " +
            "sent as deltas. Guest loss: its work per second over the migration against its pace running alone just " +
            "before. Medians " +
            "over repeats; 'completed' counts the runs that completed and verified.");
        md.AppendLine();
        md.AppendLine("| link | writes / link | method | completed | total s | downtime ms | GB on wire | rounds | " +
            "max throttle | deltas | dirty rate MB/s | guest loss |");
        md.AppendLine("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var guest in ConvergeGuests())
        {
            foreach (string method in ConvergeSetups.Select(s => s.Name))
            {
                var runs = results.Converge.Where(r => r.Scenario == $"{guest.Name}-{method}").ToList();
                if (runs.Count == 0)
                {
                    continue;
                }

                var ok = runs.Where(r => r.Ok).ToList();
                var reports = runs.Where(r => r.Source is not null).Select(r => r.Source!).ToList();
                string Med(Func<Shared.Reporting.MigrationReport, double> f, string format) =>
                    reports.Count == 0 ? string.Empty : Median(reports.Select(f)).ToString(format, inv);
                string downtime = ok.Count == 0
                    ? "-"
                    : Median(ok.Select(r => r.Source!.Timing.DowntimeMs)).ToString("F0", inv);
                md.AppendLine(string.Create(inv,
                    $"| {guest.Link.Name} | {guest.Multiple:0.#}x | {method} | {ok.Count}/{runs.Count} | " +
                    $"{Med(r => r.Timing.TotalMs / 1000, "F1")} | {downtime} | " +
                    $"{Med(r => r.Transfer.BytesOnWire / 1e9, "F2")} | {Med(r => r.Rounds.Count, "F0")} | " +
                    $"{Med(r => r.Convergence.MaxThrottlePercent, "F0")}% | " +
                    $"{Med(r => r.Transfer.PagesDelta, "N0")} | " +
                    $"{Med(r => r.Rounds.Count > 1 ? r.Rounds[1].DirtyRatePagesPerSec * 4096 / 1e6 : 0, "F0")} | " +
                    $"{Med(r => GuestLoss(r) * 100, "F0")}% |"));
            }
        }

        md.AppendLine();
        md.AppendLine("A run that did not complete says why in its log (runs/); with no method, a guest that cannot " +
            "finish fails within a few rounds, naming what would let it.");
        md.AppendLine();
    }
}
