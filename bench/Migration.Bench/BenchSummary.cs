namespace Migration.Bench;

/// <summary>
/// Medians of one side (hints off or on) of a scenario on a link, over the runs that completed and verified.
/// </summary>
internal sealed record SideMedians(int Runs, double TotalMs, double DowntimeMs, double MaxDowntimeMs,
    double BytesOnWire, double PagesSkipped, double SourceCpuSeconds, double TargetCpuSeconds,
    double SourcePeakRssBytes, double TargetPeakRssBytes);

/// <summary>A scenario on a link: medians without and with hints and their ratios.</summary>
internal sealed record ScenarioRow(string Scenario, string Link, SideMedians? Off, SideMedians? On)
{
    public double? TimeRatio => Ratio(o => o.TotalMs);

    public double? BytesRatio => Ratio(o => o.BytesOnWire);

    public double? DowntimeRatio => Ratio(o => o.DowntimeMs);

    public double? CpuRatio => Ratio(o => o.SourceCpuSeconds + o.TargetCpuSeconds);

    private double? Ratio(Func<SideMedians, double> f) =>
        Off is null || On is null || f(Off) == 0 ? null : f(On) / f(Off);
}

/// <summary>
/// What mutual TLS costs the raw page stream at one channel count: throughput and each side's CPU per byte, TLS over
/// cleartext, from runs of the same sitting.
/// </summary>
internal sealed record TlsCost(int Channels, double ThroughputRatio, double SourceCpuPerByteRatio,
    double TargetCpuPerByteRatio);

/// <summary>One of the figures: the goal, what was measured, whether it was met.</summary>
internal sealed record Figure(string Name, string Goal, string Measured, bool? Met);

/// <summary>The benchmark's conclusions: per-scenario rows, the raw stream against iperf3, and the figures.</summary>
internal sealed class BenchSummary
{
    public List<ScenarioRow> Rows { get; set; } = [];

    /// <summary>Best raw page-stream throughput (round 0 bytes over round 0 time), bytes per second.</summary>
    public double? RawStreamBytesPerSecond { get; set; }

    public double? Iperf3BytesPerSecond { get; set; }

    public double? RawToIperf3 => RawStreamBytesPerSecond / Iperf3BytesPerSecond;

    public List<TlsCost> Tls { get; set; } = [];

    public SoakSummary? Soak { get; set; }

    public List<Figure> Figures { get; set; } = [];

    public static BenchSummary Build(BenchResults results, IReadOnlyList<BenchScenario> scenarios)
    {
        var summary = new BenchSummary();
        foreach (var scenario in scenarios)
        {
            foreach (var link in BenchScenario.Links)
            {
                var runs = results.Runs.Where(r => r.Scenario == scenario.Name && r.Link == link.Name).ToList();
                summary.Rows.Add(new ScenarioRow(scenario.Name, link.Name, Side(runs, hints: false),
                    Side(runs, hints: true)));
            }
        }

        var cleartext = results.RawStream.Where(r => r.Ok && !IsTls(r)).ToList();
        summary.RawStreamBytesPerSecond =
            cleartext.Select(RoundZeroRate).DefaultIfEmpty().Max() is var raw and > 0 ? raw : null;
        foreach (var tls in results.RawStream.Where(r => r.Ok && IsTls(r)))
        {
            string plain = tls.Scenario[..^BenchRunner.TlsSuffix.Length];
            if (cleartext.FirstOrDefault(r => r.Scenario == plain) is { } baseline && RoundZeroRate(baseline) > 0)
            {
                summary.Tls.Add(new TlsCost(ChannelsOf(plain), RoundZeroRate(tls) / RoundZeroRate(baseline),
                    CpuPerByte(tls, source: true) / CpuPerByte(baseline, source: true),
                    CpuPerByte(tls, source: false) / CpuPerByte(baseline, source: false)));
            }
        }

        summary.Soak = SoakSummary.Of(results.Soak, Bench.Soak.DowntimeLimitMs);
        var iperf = results.Iperf3.Where(i => i.BytesPerSecond is not null)
            .Select(i => i.BytesPerSecond!.Value)
            .ToList();
        summary.Iperf3BytesPerSecond = iperf.Count > 0 ? iperf.Average() : null;
        summary.Figures = Evaluate(results, scenarios, summary);
        return summary;
    }

    /// <summary>The channel count in a raw-stream run's name (raw-stream-2ch).</summary>
    private static int ChannelsOf(string rawScenario) =>
        int.Parse(rawScenario["raw-stream-".Length..^"ch".Length], System.Globalization.CultureInfo.InvariantCulture);

    public static bool IsTls(BenchRun run) => run.Scenario.EndsWith(BenchRunner.TlsSuffix, StringComparison.Ordinal);

    /// <summary>A process's migration CPU seconds per byte on the wire.</summary>
    private static double CpuPerByte(BenchRun run, bool source)
    {
        double cpu = source
            ? run.Source!.Process?.MigrationCpuSeconds ?? 0
            : run.TargetProcess?.MigrationCpuSeconds ?? 0;
        return cpu / Math.Max(1, run.Source!.Transfer.BytesOnWire);
    }

    /// <summary>Round 0 of a raw-stream run: bytes over time, the part where the channels are busy with data.</summary>
    public static double RoundZeroRate(BenchRun run) =>
        run.Source?.Rounds.FirstOrDefault() is { Ms: > 0 } r0 ? r0.Bytes / (r0.Ms / 1000) : 0;

    private static SideMedians? Side(List<BenchRun> runs, bool hints)
    {
        var ok = runs.Where(r => r.Hints == hints && r.Ok).ToList();
        if (ok.Count == 0)
        {
            return null;
        }

        return new SideMedians(
            ok.Count,
            Median(ok, r => r.Source!.Timing.TotalMs),
            Median(ok, r => r.Source!.Timing.DowntimeMs),
            ok.Max(r => r.Source!.Timing.DowntimeMs),
            Median(ok, r => r.Source!.Transfer.BytesOnWire),
            Median(ok, r => r.Source!.Transfer.PagesSkippedByHints),
            Median(ok, r => r.Source!.Process?.MigrationCpuSeconds ?? 0),
            Median(ok, r => r.TargetProcess?.MigrationCpuSeconds ?? 0),
            ok.Max(r => (double)(r.Source!.Process?.PeakRssBytes ?? 0)),
            ok.Max(r => (double)(r.TargetProcess?.PeakRssBytes ?? 0)));
    }

    private static double Median(List<BenchRun> runs, Func<BenchRun, double> f) =>
        Peers.Spread.Of(runs.Select(f))?.Median ?? throw new InvalidOperationException("a median of no runs");

    private static List<Figure> Evaluate(BenchResults results, IReadOnlyList<BenchScenario> scenarios,
        BenchSummary summary)
    {
        var figures = new List<Figure>();
        foreach (var row in summary.Rows)
        {
            var scenario = scenarios.First(s => s.Name == row.Scenario);
            string where = $"{row.Scenario} {row.Link}";
            if (scenario.TimeRatioGoal is double tg)
            {
                figures.Add(new Figure($"{where}: time hinted/unhinted", $"<= {tg:F2}", Format(row.TimeRatio),
                    row.TimeRatio <= tg));
            }

            if (scenario.BytesRatioGoal is double bg)
            {
                figures.Add(new Figure($"{where}: bytes hinted/unhinted", $"<= {bg:F2}", Format(row.BytesRatio),
                    row.BytesRatio <= bg));
            }

            figures.Add(new Figure($"{where}: downtime hinted/unhinted", "<= 1.10", Format(row.DowntimeRatio),
                row.DowntimeRatio <= 1.10));
            double? worst = row.Off is null && row.On is null
                ? null
                : Math.Max(row.Off?.MaxDowntimeMs ?? 0, row.On?.MaxDowntimeMs ?? 0);
            figures.Add(new Figure($"{where}: worst downtime of any run", "<= 300 ms",
                worst is null ? "n/a" : $"{worst:F0} ms", worst <= 300));
            if (row.Scenario.StartsWith("idle-", StringComparison.Ordinal) && row.Link == BenchScenario.Uncapped.Name)
            {
                figures.Add(new Figure($"{where}: hinted total time", "<= 500 ms",
                    row.On is null ? "n/a" : $"{row.On.TotalMs:F0} ms", row.On?.TotalMs <= 500));
            }
        }

        if (results.RawStream.Count > 0)
        {
            figures.Add(new Figure("raw page stream / iperf3 loopback", ">= 0.50", Format(summary.RawToIperf3),
                summary.RawToIperf3 >= 0.5));
        }
        foreach (var tls in summary.Tls)
        {
            figures.Add(new Figure($"raw stream, mutual TLS / cleartext, {tls.Channels} channels: throughput",
                "measured", Format(tls.ThroughputRatio), null));
        }

        if (results.Peer is { Unavailable: null } peer)
        {
            figures.AddRange(PeerFigures(peer, results.Iperf3));
        }

        if (summary.Soak is { } soak)
        {
            figures.Add(new Figure("soak: migrations verified", $"{soak.Runs} of {soak.Runs}",
                $"{soak.Verified} of {soak.Runs}", soak.Verified == soak.Runs));
            figures.Add(new Figure(
                $"soak: target RSS, mean of the last {soak.Window} / of the 10th to the {9 + soak.Window}th",
                "<= 1.05", $"{soak.RssTrend:F3} ({soak.LateRssMean / (1 << 20):F0} / " +
                $"{soak.EarlyRssMean / (1 << 20):F0} MiB; range {soak.MinRss >> 20}-{soak.MaxRss >> 20} MiB)",
                soak.RssTrend <= 1.05));
            figures.Add(new Figure("soak: target RSS slope from the 10th on (least squares), MiB per migration",
                "measured", $"{soak.RssSlopeBytesPerMigration / (1 << 20):F3}", null));
            figures.Add(new Figure("soak: target threads, at the 10th -> at the end", "measured",
                $"{soak.ThreadsAtTenth} -> {soak.ThreadsAtEnd}", null));
            figures.Add(new Figure("soak: target descriptors, most from the 10th on minus at the 10th", "<= 4",
                $"{soak.MaxHandlesFromTenth - soak.HandlesAtTenth} ({soak.HandlesAtTenth} -> {soak.MaxHandlesFromTenth})",
                soak.MaxHandlesFromTenth - soak.HandlesAtTenth <= 4));
            figures.Add(new Figure("soak: worst downtime of any migration", $"<= {soak.DowntimeLimitMs:F0} ms",
                $"{soak.WorstDowntimeMs:F0} ms", soak.WorstDowntimeMs <= soak.DowntimeLimitMs));
        }

        foreach (var group in results.Runs.Concat(results.RawStream).Where(r => r.Ok)
            .GroupBy(r => r.Source!.Guest.RamBytes))
        {
            double limit = (1.05 * group.Key) + (200 << 20);
            double src = group.Max(r => (double)(r.Source!.Process?.PeakRssBytes ?? 0));
            double tgt = group.Max(r => (double)(r.TargetProcess?.PeakRssBytes ?? 0));
            string guest = $"{group.Key >> 20} MiB guests";
            figures.Add(new Figure($"peak RSS, source, {guest}", $"<= {limit / (1 << 20):F0} MiB",
                $"{src / (1 << 20):F0} MiB", src <= limit));
            figures.Add(new Figure($"peak RSS, target, {guest}", $"<= {limit / (1 << 20):F0} MiB",
                $"{tgt / (1 << 20):F0} MiB", tgt <= limit));
        }

        return figures;
    }

    /// <summary>The goals against QEMU measured in the same sitting (ratios of medians, ours / QEMU).</summary>
    private static IEnumerable<Figure> PeerFigures(Peers.PeerResults peer, List<Iperf3Result> iperf3)
    {
        var rows = Peers.PeerRow.Of(peer);
        var ratios = Peers.PeerRatio.Of(rows);
        foreach (var r in ratios.Where(r => r.Work.StartsWith("random-", StringComparison.Ordinal)))
        {
            yield return new Figure($"vs QEMU, page stream {r.Work}: throughput ours / QEMU", ">= 1",
                Format(r.Throughput), r.Throughput >= 1);
            yield return new Figure($"vs QEMU, {r.Work}: CPU per GB, source ours / QEMU", "<= 1",
                Format(r.SourceCpuPerGB), r.SourceCpuPerGB <= 1);
            yield return new Figure($"vs QEMU, {r.Work}: CPU per GB, target ours / QEMU destination", "<= 1",
                Format(r.TargetCpuPerGB), r.TargetCpuPerGB <= 1);
        }

        var link = iperf3.Where(i => i.BytesPerSecond is not null).Select(i => i.BytesPerSecond!.Value).ToList();
        var best = rows
            .Where(r => r.Engine == Peers.PeerRun.Ours && r.Work.StartsWith("random-", StringComparison.Ordinal))
            .Select(r => r.GBps?.Median).Max();
        if (link.Count > 0 && best is double gbps)
        {
            double ratio = gbps * 1e9 / link.Average();
            yield return new Figure("page stream (best channel count, total time) / iperf3", ">= 0.7",
                $"{ratio:F3}", ratio >= 0.7);
        }

        var qemuIdle = rows.FirstOrDefault(r => r.Engine == Peers.PeerRun.Qemu && r.Work == "idle");
        var oursHinted = rows.FirstOrDefault(r => r.Engine == Peers.PeerRun.Ours && r.Work == "idle-hints");
        if (qemuIdle?.TotalMs is { } q && oursHinted?.TotalMs is { } o)
        {
            yield return new Figure("idle with hints: total ms, ours with hints against QEMU without",
                $"<= {q.Median:F0} ms", $"{o.Median:F0} ms", o.Median <= q.Median);
        }
    }

    private static string Format(double? ratio) => ratio is null ? "n/a" : $"{ratio:F3}";
}
