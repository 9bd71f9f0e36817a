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

        summary.RawStreamBytesPerSecond =
            results.RawStream.Where(r => r.Ok).Select(RoundZeroRate).DefaultIfEmpty().Max() is var raw and > 0
                ? raw
                : null;
        var iperf = results.Iperf3.Where(i => i.BytesPerSecond is not null)
            .Select(i => i.BytesPerSecond!.Value)
            .ToList();
        summary.Iperf3BytesPerSecond = iperf.Count > 0 ? iperf.Average() : null;
        summary.Figures = Evaluate(results, scenarios, summary);
        return summary;
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

    private static double Median(List<BenchRun> runs, Func<BenchRun, double> f)
    {
        var values = runs.Select(f).Order().ToArray();
        return values.Length % 2 == 1
            ? values[values.Length / 2]
            : (values[(values.Length / 2) - 1] + values[values.Length / 2]) / 2;
    }

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

    private static string Format(double? ratio) => ratio is null ? "n/a" : $"{ratio:F3}";
}
