using System.Diagnostics.Metrics;
using Migration.Shared.Diagnostics;
using Migration.Protocol;

namespace Migration.Target.Diagnostics;

/// <summary>
/// The target's live instruments (meter <see cref="MeterNames.Target"/>), made from the host's
/// <see cref="IMeterFactory"/> so <c>dotnet-counters monitor -n Migration.Target --counters Migration.Target</c> and
/// OpenTelemetry see them beside ASP.NET Core's own. Counters are totals over the process's life.
/// </summary>
internal sealed class TargetMetrics
{
    public TargetMetrics(IMeterFactory factory)
        : this(factory?.Create(MeterNames.Target, "1.0") ?? throw new ArgumentNullException(nameof(factory)))
    {
    }

    public TargetMetrics(Meter meter)
    {
        ArgumentNullException.ThrowIfNull(meter);
        PagesReceived = meter.CreateCounter<long>("migration.target.pages.received", "{page}",
            "Pages received and applied to guest RAM (or found older than the copy already applied)");
        BytesReceived = meter.CreateCounter<long>("migration.target.bytes.received", "By",
            "Page payload bytes received");
        Active = meter.CreateUpDownCounter<long>("migration.target.active", "{migration}",
            "Migrations being received or verified now");
        Migrations = meter.CreateCounter<long>("migration.target.migrations", "{migration}",
            "Migrations ended here, by outcome (resumed, discarded)");
        Switchover = meter.CreateHistogram<double>("migration.target.switchover", "ms",
            "Complete call: verification, building the VM and resuming it");
    }

    public Counter<long> PagesReceived { get; }

    public Counter<long> BytesReceived { get; }

    public UpDownCounter<long> Active { get; }

    public Counter<long> Migrations { get; }

    public Histogram<double> Switchover { get; }

    public void Ended(MigrationOutcome outcome)
    {
        Active.Add(-1);
        Migrations.Add(1, new KeyValuePair<string, object?>("outcome", outcome.ToString().ToLowerInvariant()));
    }
}
