using System.Globalization;
using System.Text;

namespace Migration.Bench;

/// <summary>One shape of QEMU's busy guest that ours copies: link, working set, RAM and the rate asked.</summary>
internal sealed record BesideQemu(string Link, long LinkBytesPerSecond, int WorkingSetMiB, long RamBytes,
    double AskedMBps)
{
    /// <summary>The scenario name of our run with <paramref name="setup"/>.</summary>
    public string Scenario(string setup) => string.Create(CultureInfo.InvariantCulture,
        $"beside-qemu-{Link}-{AskedMBps:0.#}MBps-{setup}");
}

/// <summary>
/// Our half of <c>--only converge-qemu</c>: after each repeat of QEMU's runs on a guest shape, ours migrates the same
/// shape (RAM, working set written uniformly, one vCPU, the rate asked, the link, downtime limit 300 ms) with
/// auto-converge and the dirty limit, so the two engines alternate within one sitting. Hints are off, as QEMU's guest
/// has no balloon: both send the whole of RAM in the first round, and the rounds after it are what is compared.
/// </summary>
internal sealed partial class BenchRunner
{
    /// <summary>Ours beside QEMU: its auto-converge, and the dirty limit QEMU cannot run under TCG.</summary>
    public static IReadOnlyList<ConvergeSetup> BesideQemuSetups =>
        [.. ConvergeSetups.Where(s => s.Name is "auto" or "dirtylimit")];

    private async Task RunOursBesideQemuAsync(BesideQemu shape, int repeat, int timeoutSeconds, CancellationToken ct)
    {
        var inv = CultureInfo.InvariantCulture;
        string workingSet = ((double)((long)shape.WorkingSetMiB << 20) / shape.RamBytes).ToString("0.####", inv);
        foreach (var setup in repeat % 2 == 1 ? BesideQemuSetups : BesideQemuSetups.Reverse())
        {
            var run = await RunMigrationAsync(shape.Scenario(setup.Name), shape.RamBytes,
                [
                    "--workload", "busy", "--busy-dirty-rate", (shape.AskedMBps * 1e6).ToString("F0", inv) + "B/s",
                    "--busy-working-set", workingSet, "--busy-hot-set", "1",
                ],
                new BenchLink(shape.Link, shape.LinkBytesPerSecond.ToString(inv) + "B/s"), hints: false, repeat,
                channels: 1, ct,
                sourceArgs: [.. setup.Args, "--max-rounds", "60", "--timeout-seconds", $"{timeoutSeconds}"],
                vcpus: 1);
            _results.Converge.Add(run);
            Save();
            output.WriteLine("     " + DescribeConverge(run));
        }
    }

    /// <summary>
    /// QEMU's auto-converge and ours on the same guest shapes, one row per engine and method, medians over repeats,
    /// and ours against QEMU's auto-converge as ratios.
    /// </summary>
    public static string BesideQemuMarkdown(BenchResults results)
    {
        if (results.ConvergeQemu is not { Unavailable: null } qemu || qemu.Runs.Count == 0)
        {
            return string.Empty;
        }

        var inv = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        md.AppendLine(inv, $"## Convergence beside QEMU ({qemu.QemuVersion}): the same guest shape, alternating");
        md.AppendLine();
        md.AppendLine("Each repeat migrates QEMU's busy Linux guest (TCG, one vCPU) with auto-converge off and on, " +
            "then ours on a guest of the same shape: RAM, working set written uniformly, one vCPU, the rate asked, " +
            "the link, downtime limit 300 ms, free page hints off (QEMU's guest has no balloon; both send all of " +
            "RAM in the first round). Both workloads pace on their own CPU clock, so a throttle costs them " +
            "work. Guest lost: 1 - its pace during the migration / its pace running alone just before, for both. " +
            "Ratios: ours / QEMU's auto-converge, medians over repeats.");
        md.AppendLine();
        md.AppendLine("| link, WS | asked MB/s | engine, method | completed | total s | downtime ms | MB sent | " +
            "max throttle | guest lost | time / QEMU ac | loss - QEMU ac |");
        md.AppendLine("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        var shapes = qemu.Runs.Where(r => r.Error is null || r.TotalMs > 0)
            .Select(r => (r.Link, r.WorkingSetMiB, r.AskedMBps)).Distinct();
        foreach (var (link, ws, asked) in shapes)
        {
            var runs = qemu.Runs.Where(r => r.Link == link && r.WorkingSetMiB == ws && r.AskedMBps == asked).ToList();
            var ac = runs.Where(r => r.AutoConverge && r.Completed && r.Error is null).ToList();
            double? acTime = ac.Count > 0 ? Median(ac.Select(r => r.TotalMs / 1000)) : null;
            double? acLoss = ac.Count > 0 ? Median(ac.Select(r => r.ThroughputLost ?? 0)) : null;
            string prefix = string.Create(inv, $"| {link}, {ws} MiB | {asked:0.#} |");
            foreach (bool auto in new[] { false, true })
            {
                var mine = runs.Where(r => r.AutoConverge == auto).ToList();
                var ok = mine.Where(r => r.Completed && r.Error is null).ToList();
                if (mine.Count == 0)
                {
                    continue;
                }

                md.AppendLine(string.Create(inv,
                    $"{prefix} QEMU, auto-converge {(auto ? "on" : "off")} | {ok.Count}/{mine.Count} | " +
                    $"{Median(mine.Select(r => r.TotalMs / 1000)):F1} | " +
                    $"{(ok.Count > 0 ? Median(ok.Select(r => r.DowntimeMs ?? 0)).ToString("F0", inv) : "-")} | " +
                    $"{Median(mine.Select(r => r.BytesTransferred / 1e6)):F0} | " +
                    $"{Median(mine.Select(r => (double)r.MaxThrottlePercent)):F0}% | " +
                    $"{Median(mine.Select(r => (r.ThroughputLost ?? 0) * 100)):F0}% | | |"));
            }

            var shape = new BesideQemu(link, 0, ws, 0, asked);
            foreach (var setup in BesideQemuSetups)
            {
                var ours = results.Converge.Where(r => r.Scenario == shape.Scenario(setup.Name)).ToList();
                var reports = ours.Where(r => r.Source is not null).Select(r => r.Source!).ToList();
                if (reports.Count == 0)
                {
                    continue;
                }

                var ok = ours.Where(r => r.Ok).Select(r => r.Source!).ToList();
                double time = Median(reports.Select(r => r.Timing.TotalMs / 1000));
                double loss = Median(reports.Select(GuestLoss));
                md.AppendLine(string.Create(inv,
                    $"{prefix} ours, {setup.Name} | {ok.Count}/{ours.Count} | {time:F1} | " +
                    $"{(ok.Count > 0 ? Median(ok.Select(r => r.Timing.DowntimeMs)).ToString("F0", inv) : "-")} | " +
                    $"{Median(reports.Select(r => r.Transfer.BytesOnWire / 1e6)):F0} | " +
                    $"{Median(reports.Select(r => r.Convergence.MaxThrottlePercent)):F0}% | {loss * 100:F0}% | " +
                    $"{(acTime is double t ? (time / t).ToString("F2", inv) : "n/a")} | " +
                    $"{(acLoss is double l ? ((loss - l) * 100).ToString("+0;-0;0", inv) + " pts" : "n/a")} |"));
            }
        }

        md.AppendLine();
        return md.ToString();
    }
}
