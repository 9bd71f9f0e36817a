namespace Migration.Shared.Diagnostics;

/// <summary>
/// The meters the engine publishes through <c>System.Diagnostics.Metrics</c>, so a migration can be watched live
/// with <c>dotnet-counters monitor -n Migration.Source --counters Migration.Source,Migration.Balloon</c> or collected
/// by OpenTelemetry (<c>AddMeter("Migration.*")</c>). Instrument names follow OpenTelemetry's dotted lower case.
/// </summary>
public static class MeterNames
{
    /// <summary>The source's precopy engine: pages and bytes sent, rounds, dirty rate, expected downtime.</summary>
    public const string Source = "Migration.Source";

    /// <summary>The target: pages and bytes received, migrations by outcome, switchover time.</summary>
    public const string Target = "Migration.Target";

    /// <summary>The balloon device: free page hints received, applied, dropped, pages cleared, device errors.</summary>
    public const string Balloon = "Migration.Balloon";
}
