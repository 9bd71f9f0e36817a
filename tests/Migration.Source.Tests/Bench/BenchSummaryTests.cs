using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Bench;

namespace Migration.Source.Tests.Bench;

/// <summary>The benchmark's arithmetic (medians, ratios, goals) and its tables, without running migrations.</summary>
public sealed class BenchSummaryTests
{
    private static BenchRun Run(string scenario, string link, bool hints, int repeat, double totalMs, double downtimeMs,
        long bytes, MigrationStatus status = MigrationStatus.Completed) => new()
        {
            Scenario = scenario,
            Link = link,
            Hints = hints,
            Repeat = repeat,
            Source = new MigrationReport
            {
                Status = status,
                Verified = status == MigrationStatus.Completed,
                Guest = { RamBytes = 1L << 30 },
                Timing = { TotalMs = totalMs, DowntimeMs = downtimeMs },
                Transfer = { BytesOnWire = bytes },
                Process = new ProcessStats { CpuSeconds = 2, MigrationCpuSeconds = 1, PeakRssBytes = 300L << 20 },
            },
            TargetProcess = new ProcessStats { CpuSeconds = 2, MigrationCpuSeconds = 0.5, PeakRssBytes = 1100L << 20 },
        };

    [Fact]
    public void Medians_AndRatios_CountOnlyVerifiedRuns_AndGoalsAreJudged()
    {
        var scenarios = BenchScenario.All(quick: true);
        var results = new BenchResults { Quick = true, Repeat = 3 };
        string idle = scenarios[0].Name;
        foreach (var link in BenchScenario.Links)
        {
            results.Runs.AddRange(
            [
                Run(idle, link.Name, hints: false, 1, 1000, 100, 4000),
                Run(idle, link.Name, hints: true, 1, 300, 120, 400),
                Run(idle, link.Name, hints: false, 2, 1200, 100, 4000),
                Run(idle, link.Name, hints: true, 2, 500, 120, 400),
                Run(idle, link.Name, hints: false, 3, 1100, 350, 4000),
                Run(idle, link.Name, hints: true, 3, 400, 120, 400),
                // must not move any median
                Run(idle, link.Name, hints: true, 4, 99_999, 9_999, 1, status: MigrationStatus.Failed),
            ]);
        }

        var summary = BenchSummary.Build(results, [scenarios[0]]);
        var row = summary.Rows.Single(r => r.Link == BenchScenario.Uncapped.Name);
        Assert.Equal(3, row.Off!.Runs);
        Assert.Equal(3, row.On!.Runs);
        Assert.Equal(1100, row.Off.TotalMs);
        Assert.Equal(400, row.On.TotalMs);
        Assert.Equal(400.0 / 1100, row.TimeRatio!.Value, 6);
        Assert.Equal(0.1, row.BytesRatio!.Value, 6);
        Assert.Equal(350, row.Off.MaxDowntimeMs);

        var timeGoal = summary.Figures.Single(f => f.Name == $"{idle} uncapped: time hinted/unhinted");
        Assert.False(timeGoal.Met); // 0.364 against 0.21
        var worst = summary.Figures.Single(f => f.Name == $"{idle} uncapped: worst downtime of any run");
        Assert.False(worst.Met); // one unhinted run took 350 ms
        Assert.True(summary.Figures.Single(f => f.Name.StartsWith("peak RSS, target", StringComparison.Ordinal)).Met);
        // not run
        Assert.DoesNotContain(summary.Figures, f => f.Name.StartsWith("raw page stream", StringComparison.Ordinal));

        results.Summary = summary;
        string md = BenchMarkdown.Write(results, summary, [scenarios[0]]);
        Assert.Contains("**0.364**", md, StringComparison.Ordinal);
        Assert.Contains("## Failed runs", md, StringComparison.Ordinal);
    }
}
