using ScottPlot;

namespace Migration.Bench;

/// <summary>
/// PNG charts: time and bytes per scenario (hints off against on), and per-round pages of one run of each.
/// </summary>
internal static class BenchCharts
{
    private static readonly Color Off = new(0x8c, 0x8c, 0x8c);
    private static readonly Color On = new(0x1f, 0x77, 0xb4);

    /// <summary>Five series' colours: grey for the baseline, then blue, green, purple and orange.</summary>
    private static readonly Color[] Series =
    [
        new(0x8c, 0x8c, 0x8c), new(0x1f, 0x77, 0xb4), new(0x2c, 0xa0, 0x2c), new(0x94, 0x67, 0xbd),
        new(0xff, 0x7f, 0x0e),
    ];

    /// <summary>Writes the charts into <paramref name="dir"/>; returns their file names.</summary>
    public static IReadOnlyList<string> Write(BenchResults results, IReadOnlyList<BenchScenario> scenarios, string dir)
    {
        var written = new List<string>();
        if (results.Summary is { Rows.Count: > 0 } summary)
        {
            written.Add(Grouped(summary, dir, "time.png", "Total migration time (median)", "ms", s => s.TotalMs));
            written.Add(Grouped(summary, dir, "bytes.png", "Bytes on the wire (median)", "MB",
                s => s.BytesOnWire / 1e6));
        }

        foreach (var scenario in scenarios)
        {
            var runs = results.Runs
                .Where(r => r.Scenario == scenario.Name && r.Link == BenchScenario.Uncapped.Name
                    && r.Repeat == 1 && r.Ok)
                .ToList();
            if (runs.Count > 0)
            {
                written.Add(Rounds(scenario.Name, runs, dir));
            }
        }

        if (results.Scale.Any(r => r.Ok))
        {
            written.Add(Scale(results.Scale, dir));
        }

        if (results.Soak.Count > 0)
        {
            written.Add(Soak(results.Soak, dir));
        }

        if (results.Peer is { } peer && peer.Runs.Count + peer.Floor.Count > 0)
        {
            written.Add(Peer(peer, results.Iperf3, dir));
        }

        if (results.BalloonTimings.Count > 0)
        {
            written.Add(Balloon(results, dir));
        }

        if (results.Compare.Any(r => r.Ok))
        {
            written.Add(Compare(results, dir));
        }

        if (results.Converge.Any(r => r.Scenario.StartsWith("converge-", StringComparison.Ordinal)))
        {
            written.Add(Converge(results, dir));
        }

        return written;
    }

    /// <summary>The scale scenario: total time and downtime against guest size, hints off and on (medians).</summary>
    private static string Scale(List<BenchRun> runs, string dir)
    {
        var multi = new Multiplot();
        multi.AddPlots(2);
        var metrics = new (string Title, Func<BenchRun, double> Value)[]
        {
            ("Idle guest: total migration time against RAM size (median)", r => r.Source!.Timing.TotalMs),
            ("Downtime against RAM size (median)", r => r.Source!.Timing.DowntimeMs),
        };
        for (int m = 0; m < metrics.Length; m++)
        {
            var plot = multi.GetPlot(m);
            foreach (var (hints, fixedInUse, color, label) in new[]
            {
                (false, false, Off, "hints off, 4.5% in use"), (true, false, On, "hints on, 4.5% in use"),
                (false, true, Colors.DarkOrange, "hints off, 370 MiB in use"),
                (true, true, Colors.Green, "hints on, 370 MiB in use"),
            })
            {
                var points = runs
                    .Where(r => r.Hints == hints && r.Ok
                        && r.Scenario.EndsWith(BenchRunner.FixedSuffix, StringComparison.Ordinal) == fixedInUse)
                    .GroupBy(r => r.Source!.Guest.RamBytes / (double)(1L << 30))
                    .OrderBy(g => g.Key)
                    .Select(g => (X: g.Key, Y: Peers.Spread.Of(g.Select(metrics[m].Value))!.Median))
                    .ToList();
                if (points.Count == 0)
                {
                    continue;
                }

                var line = plot.Add.Scatter(points.Select(p => p.X).ToArray(), points.Select(p => p.Y).ToArray());
                line.Color = color;
                line.LegendText = label;
            }

            plot.Title(metrics[m].Title);
            plot.XLabel("guest RAM (GiB)");
            plot.YLabel("ms");
            plot.ShowLegend();
        }

        const string File = "scale.png";
        multi.SavePng(Path.Combine(dir, File), 900, 800);
        return File;
    }

    /// <summary>The soak: the target's RSS and descriptors after each migration, and each migration's downtime.</summary>
    private static string Soak(List<SoakRun> runs, string dir)
    {
        var multi = new Multiplot();
        multi.AddPlots(2);
        double[] xs = [.. runs.Select(r => (double)r.Index)];
        var footprint = multi.GetPlot(0);
        var rss = footprint.Add.Scatter(xs, [.. runs.Select(r => r.TargetRssBytes / (double)(1 << 20))]);
        rss.Color = On;
        rss.LegendText = "target RSS (MiB)";
        var fds = footprint.Add.Scatter(xs, [.. runs.Select(r => (double)r.TargetHandles)]);
        fds.Color = Off;
        fds.LegendText = "target file descriptors";
        footprint.Title($"Soak: one target, {runs.Count} migrations: footprint once free again");
        footprint.XLabel("migration");
        footprint.ShowLegend();
        var downtime = multi.GetPlot(1);
        var bars = downtime.Add.Bars(xs, [.. runs.Select(r => r.DowntimeMs)]);
        bars.Color = On;
        var limit = downtime.Add.HorizontalLine(Bench.Soak.DowntimeLimitMs);
        limit.LinePattern = LinePattern.Dashed;
        limit.Text = "limit";
        downtime.Title("Downtime of each migration");
        downtime.XLabel("migration");
        downtime.YLabel("ms");
        const string File = "soak.png";
        multi.SavePng(Path.Combine(dir, File), 900, 800);
        return File;
    }

    /// <summary>
    /// The balloon scenario: inflate and deflate time per encoding (medians), and the ballooned guest's migration
    /// against the same guest unballooned and ballooned but sent as zero pages (total time, bytes).
    /// </summary>
    private static string Balloon(BenchResults results, string dir)
    {
        var multi = new Multiplot();
        multi.AddPlots(2);
        var first = results.BalloonTimings[0];
        var timings = results.BalloonTimings.GroupBy(t => t.Encoding)
            .Select(g => (g.Key, Peers.Spread.Of(g.Select(t => t.InflateMs))!.Median,
                Peers.Spread.Of(g.Select(t => t.DeflateMs))!.Median))
            .Select(x => (x.Key, x.Item2, $"{x.Item2:F0}", x.Item3, $"{x.Item3:F0}"))
            .ToList();
        PairedBars(multi.GetPlot(0), timings, "inflate", "deflate",
            $"Balloon: {first.Pages * 4096 >> 20:N0} MiB of a {first.RamBytes >> 30} GiB guest in and out (median)");
        multi.GetPlot(0).YLabel("ms");
        var migrations = results.BalloonMigrations.Where(r => r.Ok).GroupBy(r => r.Scenario)
            .Select(g => (g.Key, Peers.Spread.Of(g.Select(r => r.Source!.Timing.TotalMs))!.Median,
                Peers.Spread.Of(g.Select(r => r.Source!.Transfer.BytesOnWire / 1e6))!.Median))
            .Select(x => (x.Key, x.Item2, $"{x.Item2:F0} ms", x.Item3, $"{x.Item3:F0} MB"))
            .ToList();
        PairedBars(multi.GetPlot(1), migrations, "total ms", "MB on the wire",
            "Migration, hints off: total time and bytes on the wire (median)");
        const string File = "balloon.png";
        multi.SavePng(Path.Combine(dir, File), 900, 800);
        return File;
    }

    /// <summary>
    /// The comparison: per guest, each mechanism's total time and bytes on the wire as a ratio against the same guest
    /// migrated with nothing (medians), one bar per mechanism.
    /// </summary>
    private static string Compare(BenchResults results, string dir)
    {
        var mechanisms = BenchRunner.CompareMechanisms;
        var guests = BenchRunner.CompareGuests(results.Quick);
        string size = results.Quick ? "1g" : "8g";
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        var multi = new Multiplot();
        multi.AddPlots(2);
        foreach (var (index, title, value) in new (int, string, Func<Shared.Reporting.MigrationReport, double>)[]
        {
            (0, "Total time against no mechanism (median; lower is better)", r => r.Timing.TotalMs),
            (1, "Bytes on the wire against no mechanism (median)", r => r.Transfer.BytesOnWire),
        })
        {
            double Median(int g, string mechanism) => Peers.Spread.Of(results.Compare
                .Where(r => r.Ok && r.Scenario == $"compare-{guests[g].Name}-{size}-{mechanism}")
                .Select(r => value(r.Source!)))?.Median ?? 0;
            GroupedBars(multi.GetPlot(index), title, [.. guests.Select(g => g.Name)],
                [.. mechanisms.Select(m => m.Name)], (g, m) =>
                {
                    double baseline = Median(g, "nothing");
                    double ratio = baseline > 0 ? Median(g, mechanisms[m].Name) / baseline : 0;
                    return (ratio, ratio.ToString("F2", inv));
                });
        }

        const string File = "compare.png";
        multi.SavePng(Path.Combine(dir, File), 1100, 800);
        return File;
    }

    /// <summary>
    /// The convergence benchmark: for each busy guest (link, writes against the link), each setup's total time and
    /// bytes (medians); a setup with no completed run has an empty bar labelled "failed".
    /// </summary>
    private static string Converge(BenchResults results, string dir)
    {
        var setups = BenchRunner.ConvergeSetups;
        var guests = BenchRunner.ConvergeGuests();
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        var multi = new Multiplot();
        multi.AddPlots(2);
        foreach (var (index, title, value, format) in new (int, string, Func<Shared.Reporting.MigrationReport, double>,
            string)[]
        {
            (0, "Total time, s (median of completed runs; lower is better)", r => r.Timing.TotalMs / 1000, "F1"),
            (1, "GB on the wire (median of completed runs)", r => r.Transfer.BytesOnWire / 1e9, "F2"),
        })
        {
            GroupedBars(multi.GetPlot(index), title,
                [.. guests.Select(g => string.Create(inv, $"{g.Link.Name}\n{g.Multiple:0.#}x"))],
                [.. setups.Select(s => s.Name)], (g, m) =>
                {
                    double? median = Peers.Spread.Of(results.Converge
                        .Where(r => r.Ok && r.Scenario == $"{guests[g].Name}-{setups[m].Name}")
                        .Select(r => value(r.Source!)))?.Median;
                    return (median ?? 0, median?.ToString(format, inv) ?? "failed");
                }, fontSize: 9);
        }

        const string File = "converge.png";
        multi.SavePng(Path.Combine(dir, File), 1400, 800);
        return File;
    }

    /// <summary>
    /// One bar per series in each group, coloured by series and labelled, the group's name under them, the legend
    /// beside the plot (a bar may reach the top).
    /// </summary>
    private static void GroupedBars(Plot plot, string title, IReadOnlyList<string> groups, IReadOnlyList<string> series,
        Func<int, int, (double Value, string Label)> bar, int? fontSize = null)
    {
        var bars = new List<Bar>();
        var ticks = new List<Tick>();
        int width = series.Count + 1;
        for (int g = 0; g < groups.Count; g++)
        {
            for (int m = 0; m < series.Count; m++)
            {
                var (value, label) = bar(g, m);
                bars.Add(new Bar
                {
                    Position = (g * width) + m,
                    Value = value,
                    ValueBase = 0,
                    FillColor = Series[m],
                    Label = label,
                });
            }

            ticks.Add(new Tick((g * width) + ((series.Count - 1) / 2.0), groups[g]));
        }

        var added = plot.Add.Bars(bars);
        if (fontSize is int size)
        {
            added.ValueLabelStyle.FontSize = size;
        }

        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. ticks]);
        plot.Axes.Bottom.MajorTickStyle.Length = 0;
        plot.Axes.Margins(bottom: 0);
        plot.Title(title);
        for (int m = 0; m < series.Count; m++)
        {
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = series[m], FillColor = Series[m] });
        }

        plot.ShowLegend(Edge.Right);
    }

    /// <summary>Two bars per group (blue, grey), labelled, with the group's name under them.</summary>
    private static void PairedBars(Plot plot, List<(string Group, double A, string ALabel, double B,
        string BLabel)> groups, string aName, string bName, string title)
    {
        var bars = new List<Bar>();
        var ticks = new List<Tick>();
        for (int i = 0; i < groups.Count; i++)
        {
            var g = groups[i];
            bars.Add(new Bar { Position = i * 3, Value = g.A, ValueBase = 0, FillColor = On, Label = g.ALabel });
            bars.Add(new Bar { Position = (i * 3) + 1, Value = g.B, ValueBase = 0, FillColor = Off, Label = g.BLabel });
            ticks.Add(new Tick((i * 3) + 0.5, g.Group));
        }

        plot.Add.Bars(bars);
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. ticks]);
        plot.Axes.Bottom.MajorTickStyle.Length = 0;
        plot.Axes.Margins(bottom: 0);
        plot.Title(title);
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = aName, FillColor = On });
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = bName, FillColor = Off });
        plot.Legend.Alignment = Alignment.UpperRight;
        plot.ShowLegend();
    }

    /// <summary>
    /// The page stream beside QEMU's and the .NET socket floor's: median GB/s by channels (bars show min to max),
    /// iperf3 as a line.
    /// </summary>
    private static string Peer(Peers.PeerResults peer, List<Iperf3Result> iperf3, string dir)
    {
        var plot = new Plot();
        var groups = Peers.PeerRandomRow.Of(Peers.PeerRow.Of(peer));
        var bars = PeerBars(groups).Select(b => new Bar
        {
            Position = b.Position,
            Value = b.GBps.Median,
            ValueBase = 0,
            Error = (b.GBps.Max - b.GBps.Min) / 2,
            FillColor = PeerColor(b.Engine),
            Label = $"{b.GBps.Median:F2}",
        }).ToList();
        var ticks = groups.Select((g, i) => new Tick((i * PeerGroupWidth) + 1, $"{g.Channels}ch")).ToList();
        plot.Add.Bars(bars);
        if (iperf3.Where(x => x.BytesPerSecond is not null).Select(x => x.BytesPerSecond!.Value / 1e9).ToList() is
            { Count: > 0 } link)
        {
            var line = plot.Add.HorizontalLine(link.Average());
            line.LinePattern = LinePattern.Dashed;
            line.Text = "iperf3";
        }

        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. ticks]);
        plot.Axes.Bottom.MajorTickStyle.Length = 0;
        plot.Axes.Margins(bottom: 0);
        bool floor = groups.Any(g => g.Floor?.GBps is not null);
        plot.Title($"Page stream, {peer.RamBytes >> 30} GiB of random RAM: QEMU, ours" +
            (floor ? ", socket floor" : string.Empty) + " (median, min-max)");
        plot.YLabel(floor ? "GB/s (floor: RAM / transfer time)" : "GB/s on the wire");
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "QEMU", FillColor = PeerColor(Peers.PeerRun.Qemu) });
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "ours", FillColor = PeerColor(Peers.PeerRun.Ours) });
        if (floor)
        {
            plot.Legend.ManualItems.Add(new LegendItem
            {
                LabelText = "floor (.NET sockets)",
                FillColor = PeerColor(Peers.PeerRun.Floor),
            });
        }

        plot.Legend.Alignment = Alignment.UpperLeft;
        plot.ShowLegend();
        const string File = "peer.png";
        plot.SavePng(Path.Combine(dir, File), 800, 480);
        return File;
    }

    /// <summary>Bar slots per channel count in peer.png: QEMU, ours, the floor, and a gap.</summary>
    private const int PeerGroupWidth = 4;

    /// <summary>
    /// The bars of peer.png: for each channel count (group <c>i</c>, slots from <c>i * 4</c>) QEMU, ours and the
    /// floor in that order, each where it has a median; a missing engine leaves its slot empty.
    /// </summary>
    public static IReadOnlyList<(string Engine, int Position, Peers.Spread GBps)> PeerBars(
        IReadOnlyList<Peers.PeerRandomRow> groups)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var bars = new List<(string, int, Peers.Spread)>();
        for (int i = 0; i < groups.Count; i++)
        {
            var engines = new[] { groups[i].Qemu, groups[i].Ours, groups[i].Floor };
            for (int slot = 0; slot < engines.Length; slot++)
            {
                if (engines[slot] is { GBps: { } gbps } row)
                {
                    bars.Add((row.Engine, (i * PeerGroupWidth) + slot, gbps));
                }
            }
        }

        return bars;
    }

    private static Color PeerColor(string engine) => engine switch
    {
        Peers.PeerRun.Qemu => Off,
        Peers.PeerRun.Ours => On,
        _ => Series[2],
    };

    private static string Grouped(BenchSummary summary, string dir, string file, string title, string unit,
        Func<SideMedians, double> value)
    {
        var plot = new Plot();
        var ticks = new List<Tick>();
        var bars = new List<Bar>();
        for (int i = 0; i < summary.Rows.Count; i++)
        {
            var row = summary.Rows[i];
            double x = i * 3;
            if (row.Off is not null)
            {
                bars.Add(new Bar
                {
                    Position = x,
                    Value = value(row.Off),
                    FillColor = Off,
                    Label = $"{value(row.Off):F0}",
                });
            }

            if (row.On is not null)
            {
                bars.Add(new Bar
                {
                    Position = x + 1,
                    Value = value(row.On),
                    FillColor = On,
                    Label = $"{value(row.On):F0}",
                });
            }

            ticks.Add(new Tick(x + 0.5, $"{row.Scenario}\n{row.Link}"));
        }

        var series = plot.Add.Bars(bars);
        series.ValueLabelStyle.FontSize = 11;
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. ticks]);
        plot.Axes.Bottom.MajorTickStyle.Length = 0;
        plot.Axes.Margins(bottom: 0);
        plot.Title(title);
        plot.YLabel(unit);
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "hints off", FillColor = Off });
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "hints on", FillColor = On });
        plot.Legend.Alignment = Alignment.UpperRight;
        plot.ShowLegend();
        string path = Path.Combine(dir, file);
        plot.SavePng(path, 220 + (150 * summary.Rows.Count), 480);
        return file;
    }

    private static string Rounds(string scenario, List<BenchRun> runs, string dir)
    {
        var plot = new Plot();
        foreach (var run in runs.OrderBy(r => r.Hints))
        {
            var rounds = run.Source!.Rounds;
            double[] xs = [.. rounds.Select(r => (double)r.Round)];
            var color = run.Hints ? On : Off;
            string side = run.Hints ? "hints on" : "hints off";
            // Pages on a log scale (an empty round drawn at 1): round 0 is millions, the last rounds tens.
            var dirty = plot.Add.Scatter(xs, [.. rounds.Select(r => Math.Log10(Math.Max(1, r.DirtyPages)))]);
            dirty.Color = color;
            dirty.LinePattern = LinePattern.Dashed;
            dirty.LegendText = $"{side}: dirty at round start";
            var sent = plot.Add.Scatter(xs, [.. rounds.Select(r => Math.Log10(Math.Max(1, r.PagesSent)))]);
            sent.Color = color;
            sent.MarkerSize = 8;
            sent.LegendText = $"{side}: pages sent";
        }

        plot.Title($"{scenario}, uncapped: pages per round (last = stop-and-copy)");
        plot.XLabel("round");
        plot.YLabel("pages (log scale)");
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            LabelFormatter = y => $"{Math.Pow(10, y):N0}",
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            IntegerTicksOnly = true,
        };
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        plot.ShowLegend();
        string file = $"rounds-{scenario}.png";
        plot.SavePng(Path.Combine(dir, file), 800, 480);
        return file;
    }
}
