using System.Globalization;
using System.Text;

namespace Migration.Bench;

/// <summary>results.md: the tables a reader wants, in the order they ask.</summary>
internal static class BenchMarkdown
{
    public static string Write(BenchResults results, BenchSummary summary, IReadOnlyList<BenchScenario> scenarios)
    {
        var md = new StringBuilder();
        md.AppendLine("# Benchmark results");
        md.AppendLine();
        md.AppendLine("Command: `dotnet run --project bench/Migration.Bench -c Release --" +
            $"{(results.Quick ? " --quick" : string.Empty)} --repeat {results.Repeat}" +
            (results.Peer is not null ? " --peer qemu" : string.Empty) +
            (results.Floor is { } floor && floor.RamBytes != Floor.FloorResults.DefaultRamBytes(results.Quick)
                ? $" --floor-ram {floor.RamBytes >> 20}MiB"
                : string.Empty) +
            (results.Only is { } only ? $" --only {string.Join(' ', only)}`  " : "`  "));
        md.AppendLine($"Machine: {results.Machine.Describe()}  ");
        md.AppendLine($"Run: {results.StartedAt:yyyy-MM-dd HH:mm} to {results.FinishedAt:HH:mm} UTC. " +
                      "Each migration is a fresh target process (guest RAM preallocated) and a fresh source process; " +
                      "hints off and on alternate. Medians over the runs that completed and verified; " +
                      "CPU seconds are each process's own during the migration " +
                      "(from its start to the report; the source's includes the guest's vCPUs), " +
                      "peak RSS is each process's high-water mark, both reported by the process itself.");
        md.AppendLine();

        if (results.RawStream.Count > 0 || results.Iperf3.Count > 0)
        {
            md.AppendLine("## Raw page stream against iperf3 (same sitting)");
            md.AppendLine();
            md.AppendLine("| measurement | throughput | note |");
            md.AppendLine("|---|---:|---|");
            foreach (var i in results.Iperf3)
            {
                md.AppendLine(i.BytesPerSecond is double b
                    ? $"| iperf3 loopback, 1 TCP stream, {i.Seconds} s | {b / 1e6:F0} MB/s | {i.Version} |"
                    : $"| iperf3 loopback | n/a | {i.Error} |");
            }

            foreach (var r in results.RawStream)
            {
                md.AppendLine(r.Ok
                    ? $"| {r.Scenario}: round 0, {r.Source!.Rounds[0].PagesSent:N0} pages " +
                        $"| {BenchSummary.RoundZeroRate(r) / 1e6:F0} MB/s " +
                        $"| {r.Source.Rounds[0].Bytes / 1e6:F0} MB in {r.Source.Rounds[0].Ms:F0} ms, " +
                        $"source CPU {r.Source.Process?.MigrationCpuSeconds:F1} s, " +
                        $"target CPU {r.TargetProcess?.MigrationCpuSeconds:F1} s |"
                    : $"| {r.Scenario} | failed | {r.Error} |");
            }

            md.AppendLine();
            md.AppendLine(summary.RawToIperf3 is double ratio
                ? $"Best cleartext raw stream / mean iperf3: **{ratio:F2}**."
                : "Raw stream / iperf3: n/a.");
            foreach (var tls in summary.Tls)
            {
                md.AppendLine();
                md.AppendLine($"Mutual TLS / cleartext at {tls.Channels} channels: throughput " +
                    $"**{tls.ThroughputRatio:F2}**, source CPU per byte {tls.SourceCpuPerByteRatio:F2}, " +
                    $"target CPU per byte {tls.TargetCpuPerByteRatio:F2}.");
            }

            md.AppendLine();
        }

        if (results.Peer is { } peer)
        {
            WritePeer(md, peer);
        }

        if (results.Scale.Count + results.ScaleSkipped.Count > 0)
        {
            WriteScale(md, results);
        }

        if (results.Soak.Count > 0)
        {
            WriteSoak(md, results.Soak, summary.Soak);
        }

        if (scenarios.Count > 0)
        {
            md.AppendLine("## Scenarios: hints off against hints on");
            md.AppendLine();
        }

        foreach (var scenario in scenarios)
        {
            md.AppendLine($"### {scenario.Name}");
            md.AppendLine();
            md.AppendLine($"{scenario.Description}. Published: {scenario.PublishedSource} " +
                          $"(time ratio {scenario.PublishedTimeRatio:F3}" +
                          (scenario.PublishedBytesRatio is double pb ? $", bytes ratio {pb:F3}" : string.Empty) + ").");
            md.AppendLine();
            md.AppendLine("| link | hints | runs | total ms | downtime ms | MB on wire | pages skipped | " +
                "CPU s src + tgt | peak RSS src / tgt MiB |");
            md.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var row in summary.Rows.Where(r => r.Scenario == scenario.Name))
            {
                Side(md, row.Link, "off", row.Off);
                Side(md, row.Link, "on", row.On);
                md.AppendLine($"| {row.Link} | **on / off** | | **{F(row.TimeRatio)}** | {F(row.DowntimeRatio)} " +
                    $"| **{F(row.BytesRatio)}** | | {F(row.CpuRatio)} | |");
                md.AppendLine($"| {row.Link} | published on / off | | {F(scenario.PublishedTimeRatio)} " +
                    $"| | {F(scenario.PublishedBytesRatio)} | | | |");
            }

            md.AppendLine();
        }

        if (summary.Figures.Count > 0)
        {
            md.AppendLine("## Figures");
            md.AppendLine();
            md.AppendLine("| figure | goal | measured | met |");
            md.AppendLine("|---|---|---:|---|");
            foreach (var f in summary.Figures)
            {
                md.AppendLine($"| {f.Name} | {f.Goal} | {f.Measured} | " +
                    $"{(f.Met switch { true => "yes", false => "**no**", null => "n/a" })} |");
            }
        }

        var failed = results.Runs.Concat(results.RawStream).Concat(results.Scale).Where(r => !r.Ok).ToList();
        var peerFailed = results.Peer?.Runs.Where(r => !r.Ok).ToList() ?? [];
        var peerFloorFailed = results.Peer?.Floor.Where(r => !r.Ok).ToList() ?? [];
        if (failed.Count + peerFailed.Count + peerFloorFailed.Count > 0)
        {
            md.AppendLine();
            md.AppendLine("## Failed runs");
            md.AppendLine();
            foreach (var r in failed)
            {
                md.AppendLine($"- {r.Label}: {r.Error} (logs: {r.SourceLog}, {r.TargetLog})");
            }

            foreach (var r in peerFailed)
            {
                md.AppendLine($"- {r.Label}: {r.Error ?? "not verified"} (logs: runs/{r.Log})");
            }

            foreach (var r in peerFloorFailed)
            {
                md.AppendLine($"- {Peers.PeerRun.Floor} {Peers.PeerRun.RandomWork(r.Channels)} #{r.Repeat}: " +
                    $"{r.Error} (log: {r.Log})");
            }
        }

        BenchRunner.WriteConverge(md, results);
        return md.ToString();
    }

    private static void WritePeer(StringBuilder md, Peers.PeerResults peer)
    {
        md.AppendLine("## Side by side with QEMU (same machine, same sitting, interleaved)");
        md.AppendLine();
        md.AppendLine(peer.Unavailable is string why
            ? $"QEMU: n/a ({why})."
            : $"{peer.QemuVersion}, TCG. {peer.RamBytes >> 30} GiB guests. Random RAM: QEMU's in a memory backend " +
              "file with the VM paused, the destination's file compared with it after each run; ours a guest whose " +
              "RAM is 90% random and that writes nothing, hints off, verified by the target. Idle: QEMU a blank VM " +
              "running its firmware with 4.5% of RAM random data (`-device loader`), ours the idle guest with the " +
              "same share in use. GB/s = bytes on the wire / total time. Guest stopped: ours pause to the " +
              "target's verified resume; QEMU the source's STOP event to the destination's RESUME event (its own " +
              "`downtime` beside it). CPU: each process during the migration. Min / median / max.");
        md.AppendLine();
        if (peer.Floor.Count > 0)
        {
            md.AppendLine("Floor (random RAM only): the .NET socket floor of `--only floor` at the same RAM size " +
                "and channel count, in the same sitting: one process sends its random guest RAM with 1 MiB socket " +
                "writes over 1, 2 or 4 loopback TCP connections, another receives it straight into its own " +
                "preallocated mapping, both RAMs digested and compared. Its GB/s = RAM / the sender's transfer time " +
                "(no setup, no switchover); its CPU: each process over the transfer alone. At each channel count " +
                "odd repeats run QEMU, ours, the floor and even repeats the reverse.");
            md.AppendLine();
        }

        if (peer.LinuxUnavailable is not null
            || peer.Runs.Any(r => r.Work.StartsWith("stale", StringComparison.Ordinal)))
        {
            md.AppendLine(peer.LinuxUnavailable is string linuxWhy
                ? $"QEMU's stale rows: n/a ({linuxWhy})."
                : "Stale (free memory holding old data), hints off and on: QEMU a real Linux guest (" +
                  $"{Path.GetFileName(peer.LinuxGuest?.Kernel)}, busybox initramfs, one vCPU under TCG, " +
                  "virtio-balloon with `free-page-hint`) that filled 75% of its RAM in tmpfs and deleted it, one " +
                  "channel, verified by its heartbeat on the destination and no kernel crash there; ours a memhog " +
                  "guest of the same size that filled and freed the same share, two channels, verified by the target.");
            md.AppendLine();
        }

        md.AppendLine("| work | engine | runs | GB/s | total ms | guest stopped ms | downtime ms | MB on wire | " +
            "CPU s/GB source | CPU s/GB target |");
        md.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var row in Peers.PeerRow.Of(peer))
        {
            string failed = row.Failed > 0 ? $" ({row.Failed} failed)" : string.Empty;
            md.AppendLine($"| {row.Work} | {row.Engine} | {row.Runs}{failed} " +
                $"| {row.GBps?.Format("F2")} | {row.TotalMs?.Format("F0")} | {row.GuestStoppedMs?.Format("F0")} " +
                $"| {row.DowntimeMs?.Format("F0")} | {(row.BytesOnWire is { } b ? $"{b.Median / 1e6:F0}" : "")} " +
                $"| {row.SourceCpuPerGB?.Format("F2")} | {row.TargetCpuPerGB?.Format("F2")} |");
        }

        WritePeerRandom(md, Peers.PeerRandomRow.Of(Peers.PeerRow.Of(peer)));
        var ratios = Peers.PeerRatio.Of(Peers.PeerRow.Of(peer));
        if (ratios.Count > 0)
        {
            md.AppendLine();
            md.AppendLine("| ours / QEMU (medians) | throughput | CPU/GB source | CPU/GB target | total time | " +
                "guest stopped |");
            md.AppendLine("|---|---:|---:|---:|---:|---:|");
            foreach (var r in ratios)
            {
                md.AppendLine($"| {r.Work} | {F(r.Throughput)} | {F(r.SourceCpuPerGB)} | {F(r.TargetCpuPerGB)} " +
                    $"| {F(r.TotalTime)} | {F(r.GuestStopped)} |");
            }
        }

        var rows = Peers.PeerRow.Of(peer);
        var hinting = new[] { Peers.PeerRun.Qemu, Peers.PeerRun.Ours }
            .Select(engine => (Engine: engine,
                Off: rows.FirstOrDefault(r => r.Engine == engine && r.Work == "stale"),
                On: rows.FirstOrDefault(r => r.Engine == engine && r.Work == "stale-hints")))
            .Where(e => e.Off?.TotalMs is not null && e.On?.TotalMs is not null)
            .ToList();
        if (hinting.Count > 0)
        {
            md.AppendLine();
            md.AppendLine("| stale, hints on / off (medians) | total time | bytes on wire | guest stopped |");
            md.AppendLine("|---|---:|---:|---:|");
            foreach (var (engine, off, on) in hinting)
            {
                md.AppendLine($"| {engine} | {F(on!.TotalMs!.Median / off!.TotalMs!.Median)} " +
                    $"| {F(on.BytesOnWire!.Median / off.BytesOnWire!.Median)} " +
                    $"| {F(on.GuestStoppedMs!.Median / off.GuestStoppedMs!.Median)} |");
            }
        }

        md.AppendLine();
    }

    /// <summary>
    /// Random RAM, the three engines side by side (medians): GB/s, CPU s per GB of each process, ours over QEMU and
    /// over the floor for throughput and for each side's CPU per GB.
    /// </summary>
    private static void WritePeerRandom(StringBuilder md, IReadOnlyList<Peers.PeerRandomRow> rows)
    {
        if (rows.Count == 0)
        {
            return;
        }

        md.AppendLine();
        md.AppendLine("| random RAM (medians) | GB/s QEMU | GB/s ours | GB/s floor | GB/s ours / QEMU | " +
            "GB/s ours / floor | CPU s/GB QEMU src + dst | CPU s/GB ours src + tgt | CPU s/GB floor send + recv | " +
            "CPU/GB ours / QEMU src | CPU/GB ours / QEMU tgt | CPU/GB ours / floor src | CPU/GB ours / floor tgt |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            md.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.Channels} channel{(r.Channels == 1 ? string.Empty : "s")} | {G(r.Qemu?.GBps)} " +
                $"| {G(r.Ours?.GBps)} | {G(r.Floor?.GBps)} | **{G(r.OursToQemu?.Throughput)}** " +
                $"| **{G(r.OursToFloor?.Throughput)}** | {Cpu(r.Qemu)} | {Cpu(r.Ours)} | {Cpu(r.Floor)} " +
                $"| {G(r.OursToQemu?.SourceCpuPerGB)} | {G(r.OursToQemu?.TargetCpuPerGB)} " +
                $"| {G(r.OursToFloor?.SourceCpuPerGB)} | {G(r.OursToFloor?.TargetCpuPerGB)} |");
        }

        static string Cpu(Peers.PeerRow? row) => $"{G(row?.SourceCpuPerGB)} + {G(row?.TargetCpuPerGB)}";
    }

    private static string G(Peers.Spread? spread) => G(spread?.Median);

    private static string G(double? value) =>
        value is double v ? v.ToString("F2", CultureInfo.InvariantCulture) : "n/a";

    /// <summary>The scale scenario: medians per size and hints, the hinted/unhinted ratio, chart scale.png.</summary>
    private static void WriteScale(StringBuilder md, BenchResults results)
    {
        md.AppendLine("## Scale: idle guests from 1 to 128 GiB");
        md.AppendLine();
        md.AppendLine("Idle guests, 2 channels, uncapped loopback, fresh processes, no `--prealloc`: untouched guest " +
            "RAM is never allocated on either side. `scale-Ng`: 4.5% of RAM in use, so the memory in use grows with " +
            "the size; `scale-Ng-fixed`: the 8 GiB guest's 370 MiB in use at every size, only the RAM grows. Medians " +
            "of the verified runs. Published (128 GB idle): 41651 ms without hints, 5294 ms with. Chart: scale.png.");
        md.AppendLine();
        md.AppendLine("| guest | hints | runs | total ms | downtime ms | MB on wire | pages skipped by hints | " +
            "total hinted / unhinted |");
        md.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|");
        foreach (var size in results.Scale.Select(r => r.Scenario).Distinct())
        {
            double? unhinted = null;
            foreach (bool hints in new[] { false, true })
            {
                var ok = results.Scale.Where(r => r.Scenario == size && r.Hints == hints && r.Ok).ToList();
                if (ok.Count == 0)
                {
                    md.AppendLine($"| {size} | {(hints ? "on" : "off")} | 0 | failed | | | | |");
                    continue;
                }

                double total = Median(ok.Select(r => r.Source!.Timing.TotalMs));
                unhinted = hints ? unhinted : total;
                string ratio = hints && unhinted is double off ? $"{total / off:F3}" : string.Empty;
                md.AppendLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {size} | {(hints ? "on" : "off")} | {ok.Count} | {total:F0} | " +
                    $"{Median(ok.Select(r => r.Source!.Timing.DowntimeMs)):F0} | " +
                    $"{Median(ok.Select(r => r.Source!.Transfer.BytesOnWire / 1e6)):F0} | " +
                    $"{Median(ok.Select(r => (double)r.Source!.Transfer.PagesSkippedByHints)):N0} | {ratio} |"));
            }
        }

        foreach (string skipped in results.ScaleSkipped)
        {
            md.AppendLine();
            md.AppendLine($"- {skipped}");
        }

        md.AppendLine();
    }

    private static double Median(IEnumerable<double> values) => Peers.Spread.Of(values)!.Median;

    private static void WriteSoak(StringBuilder md, List<SoakRun> runs, SoakSummary? soak)
    {
        md.AppendLine("## Soak: back-to-back migrations into one long-lived target");
        md.AppendLine();
        md.AppendLine($"{runs.Count} migrations; workloads in turn (idle, stale, busy, churn), hints on and off, " +
            "eager and manual dirty logging, 1 to 3 channels. The target runs each guest for 0.2 s, checks and stops " +
            "it, and is sampled from /proc once it is free again. Chart: soak.png.");
        md.AppendLine();
        if (soak is not null)
        {
            md.AppendLine($"Verified {soak.Verified} of {soak.Runs}. From the 10th migration on the target's RSS " +
                $"stayed within {soak.MinRss >> 20}-{soak.MaxRss >> 20} MiB (mean " +
                $"{soak.EarlyRssMean / (1 << 20):F0} MiB over the 10th to the {9 + soak.Window}th, " +
                $"{soak.LateRssMean / (1 << 20):F0} MiB over the last {soak.Window}; slope " +
                $"{soak.RssSlopeBytesPerMigration / (1 << 20):F3} MiB per migration); descriptors " +
                $"{soak.HandlesAtTenth} -> at most {soak.MaxHandlesFromTenth}; threads {soak.ThreadsAtTenth} -> " +
                $"{soak.ThreadsAtEnd}; worst downtime " +
                $"{soak.WorstDowntimeMs:F0} ms (limit {soak.DowntimeLimitMs:F0} ms).");
            md.AppendLine();
        }

        md.AppendLine(
            "| # | workload | hints | dirty log | channels | total ms | downtime ms | target RSS MiB | fds |");
        md.AppendLine("|---:|---|---|---|---:|---:|---:|---:|---:|");
        foreach (var r in runs.Where(r => r.Index <= 3 || r.Index % 10 == 0 || !r.Ok))
        {
            md.AppendLine(r.Ok
                ? $"| {r.Index} | {r.Workload} | {(r.Hints ? "on" : "off")} | {r.DirtyLog} | {r.Channels} " +
                    $"| {r.TotalMs:F0} | {r.DowntimeMs:F0} | {r.TargetRssBytes >> 20} | {r.TargetHandles} |"
                : $"| {r.Index} | {r.Workload} | | | | **failed**: {r.Error} | | {r.TargetRssBytes >> 20} " +
                    $"| {r.TargetHandles} |");
        }

        md.AppendLine();
        md.AppendLine("(Rows 1-3, every 10th and any failure; results.json has all of them.)");
        md.AppendLine();
    }

    private static void Side(StringBuilder md, string link, string hints, SideMedians? s) =>
        md.AppendLine(s is null
            ? $"| {link} | {hints} | 0 | | | | | | |"
            : $"| {link} | {hints} | {s.Runs} | {s.TotalMs:F0} | {s.DowntimeMs:F0} | {s.BytesOnWire / 1e6:F1} | " +
              $"{s.PagesSkipped:N0} | {s.SourceCpuSeconds:F1} + {s.TargetCpuSeconds:F1} | " +
              $"{s.SourcePeakRssBytes / (1 << 20):F0} / {s.TargetPeakRssBytes / (1 << 20):F0} |");

    private static string F(double? v) => v is null ? "n/a" : $"{v:F3}";
}
