using System.Diagnostics.Metrics;
using Migration.Shared.Protocol;

namespace Migration.Shared.Diagnostics;

/// <summary>
/// The precopy engine's live instruments (meter <see cref="MeterNames.Source"/>): what <c>dotnet-counters monitor</c>
/// or an OpenTelemetry exporter shows while a migration runs. Counters are process-wide totals; gauges hold the
/// latest round's figures.
/// </summary>
/// <remarks>
/// The engine adds to the page counters once per batch (256 pages), never per page. <see cref="Shared"/> is the
/// process's instance; a test builds its own on a <see cref="Meter"/> it listens to, so tests running side by side
/// never see each other's figures.
/// </remarks>
internal sealed class SourceMetrics
{
    public SourceMetrics(Meter meter)
    {
        ArgumentNullException.ThrowIfNull(meter);
        PagesSent = meter.CreateCounter<long>("migration.source.pages.sent", "{page}",
            "Pages put on the wire, by encoding (zero, raw, lz4, delta)");
        BytesSent = meter.CreateCounter<long>("migration.source.bytes.sent", "By",
            "Page stream bytes put on the wire (messages, headers included)");
        Rounds = meter.CreateCounter<long>("migration.source.rounds", "{round}",
            "Precopy rounds finished (the final stop-and-copy round included)");
        PagesRemaining = meter.CreateGauge<long>("migration.source.pages.remaining", "{page}",
            "Pages still dirty after the latest sync");
        DirtyRate = meter.CreateGauge<double>("migration.source.dirty_rate", "{page}/s",
            "Pages the guest newly dirtied per second between the last two syncs");
        Throughput = meter.CreateGauge<double>("migration.source.throughput", "By/s",
            "Wire bytes per second of the latest round");
        ExpectedDowntime = meter.CreateGauge<double>("migration.source.expected_downtime", "ms",
            "Downtime expected if the guest stopped now: the pages still dirty at the measured data-page rate");
        Active = meter.CreateUpDownCounter<long>("migration.source.active", "{migration}",
            "Migrations running now");
        Migrations = meter.CreateCounter<long>("migration.source.migrations", "{migration}",
            "Migrations ended, by status (completed, failed, cancelled, unknown)");
        Duration = meter.CreateHistogram<double>("migration.source.duration", "ms", "Total time of a migration");
        Downtime = meter.CreateHistogram<double>("migration.source.downtime", "ms",
            "Guest stopped: pause to the target's verified resume, of completed migrations");
    }

    public static SourceMetrics Shared { get; } = new(new Meter(MeterNames.Source, "1.0"));

    public Counter<long> PagesSent { get; }

    public Counter<long> BytesSent { get; }

    public Counter<long> Rounds { get; }

    public Gauge<long> PagesRemaining { get; }

    public Gauge<double> DirtyRate { get; }

    public Gauge<double> Throughput { get; }

    public Gauge<double> ExpectedDowntime { get; }

    public UpDownCounter<long> Active { get; }

    public Counter<long> Migrations { get; }

    public Histogram<double> Duration { get; }

    public Histogram<double> Downtime { get; }

    /// <summary>One batch on the wire: its pages by encoding and its bytes.</summary>
    public void Sent(long bytes, long zero, long raw, long lz4, long delta = 0)
    {
        if (!PagesSent.Enabled && !BytesSent.Enabled)
        {
            return;
        }

        BytesSent.Add(bytes);
        AddPages(zero, "zero");
        AddPages(raw, "raw");
        AddPages(lz4, "lz4");
        AddPages(delta, "delta");
    }

    /// <summary>A migration ended: by status, with its total time and (completed) downtime.</summary>
    public void Ended(MigrationStatus status, double totalMs, double downtimeMs)
    {
        var tag = new KeyValuePair<string, object?>("status", status.ToString().ToLowerInvariant());
        Migrations.Add(1, tag);
        Duration.Record(totalMs, tag);
        if (status == MigrationStatus.Completed)
        {
            Downtime.Record(downtimeMs);
        }
    }

    private void AddPages(long pages, string encoding)
    {
        if (pages != 0)
        {
            PagesSent.Add(pages, new KeyValuePair<string, object?>("encoding", encoding));
        }
    }
}
