using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Migration.Shared.Diagnostics;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Tests.Precopy;
using Migration.TestSupport;

namespace Migration.Shared.Tests.Diagnostics;

/// <summary>
/// The live instruments tell the same story as the report: a listener on the engine's meter, as dotnet-counters or
/// OpenTelemetry attaches one, sees every page and byte the report counts, every round, the gauges of each round and
/// the migration's end.
/// </summary>
public sealed class SourceMetricsTests
{
    [Fact]
    public async Task AListener_SeesWhatTheReportCounts()
    {
        using var meter = new Meter($"test-{Guid.NewGuid():n}");
        var metrics = new SourceMetrics(meter);
        var seen = new ConcurrentDictionary<string, ConcurrentQueue<(double Value, string Tags)>>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (ReferenceEquals(instrument.Meter, meter))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        void Record(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            string text = string.Join(",", tags.ToArray().Select(t => $"{t.Key}={t.Value}"));
            seen.GetOrAdd(instrument.Name, _ => new()).Enqueue((value, text));
        }

        listener.SetMeasurementEventCallback<long>((i, v, t, _) => Record(i, v, t));
        listener.SetMeasurementEventCallback<double>((i, v, t, _) => Record(i, v, t));
        listener.Start();

        using var vm = WarmGuests.Idle(dirtyPagesPerSecond: 2000);
        var seams = EngineSeams.Production with
        {
            Metrics = metrics,
            Transport = (source, counters) => new FakeTransport(source, counters),
        };
        var options = MigrationOptions.Defaults with { Target = new Uri("http://in-process"), Channels = 2 };
        var report = await new PrecopyEngine(vm, options, seams).MigrateAsync().WaitAsync(TimeSpan.FromSeconds(60));

        Assert.True(report.Status == MigrationStatus.Completed, report.Error);
        double Sum(string name) => seen.TryGetValue(name, out var q) ? q.Sum(m => m.Value) : 0;
        long reportPages = report.Transfer.PagesZero + report.Transfer.PagesNormal + report.Transfer.PagesCompressed;
        Assert.Equal(reportPages, Sum("migration.source.pages.sent"));
        Assert.Equal(report.Transfer.BytesOnWire, Sum("migration.source.bytes.sent"));
        Assert.Equal(report.Rounds.Count, Sum("migration.source.rounds"));
        Assert.All(seen["migration.source.pages.sent"], m => Assert.Equal("encoding=raw", m.Tags));

        // one gauge value per precopy round; the remainder ends at zero with the final round
        int precopyRounds = report.Rounds.Count(r => !r.Final);
        Assert.Equal(precopyRounds, seen["migration.source.expected_downtime"].Count);
        Assert.Equal(precopyRounds, seen["migration.source.dirty_rate"].Count);
        Assert.Equal(0, seen["migration.source.pages.remaining"].Last().Value);

        Assert.Equal([(1.0, "status=completed")], seen["migration.source.migrations"]);
        Assert.Equal(report.Timing.TotalMs, Assert.Single(seen["migration.source.duration"]).Value);
        Assert.Equal(report.Timing.DowntimeMs, Assert.Single(seen["migration.source.downtime"]).Value);
        Assert.Equal(0, Sum("migration.source.active")); // +1 at the start, -1 at the end
        Assert.Equal(2, seen["migration.source.active"].Count);
    }
}
