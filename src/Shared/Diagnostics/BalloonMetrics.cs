using System.Diagnostics.Metrics;

namespace Migration.Shared.Diagnostics;

/// <summary>
/// The balloon device's instruments (meter <see cref="MeterNames.Balloon"/>). Counters are process-wide totals over
/// every migration; a migration's own figures are in its report (<c>HintStats</c>).
/// </summary>
/// <remarks>
/// One shared instance serves the process, as a device has no host to hand it a meter factory; a test that needs its
/// own measurements builds an instance on its own <see cref="Meter"/>. Adding to an instrument nobody listens to costs
/// a field read, and the device adds once per hint buffer (a block of up to 4 MiB), never per page.
/// </remarks>
public sealed class BalloonMetrics
{
    public BalloonMetrics(Meter meter)
    {
        ArgumentNullException.ThrowIfNull(meter);
        HintBlocks = meter.CreateCounter<long>("migration.balloon.hint.blocks", "{block}",
            "Free page hint blocks the device took off its queue, by outcome " +
            "(applied, or stale: an old command id or hinting stopped)");
        HintPagesCleared = meter.CreateCounter<long>("migration.balloon.hint.pages_cleared", "{page}",
            "Pages free page hinting cleared from the migration bitmap (not sent)");
        HintCommandIds = meter.CreateCounter<long>("migration.balloon.hint.command_ids", "{id}",
            "Free page hint command ids issued to the guest (one per sync while the VM runs)");
        DeviceErrors = meter.CreateCounter<long>("migration.balloon.device_errors", "{error}",
            "Malformed buffers the device refused (hinting stops for that migration)");
    }

    /// <summary>The process's instance, on a meter of its own that lives as long as the process.</summary>
    public static BalloonMetrics Shared { get; } = new(new Meter(MeterNames.Balloon, "1.0"));

    public Counter<long> HintBlocks { get; }

    public Counter<long> HintPagesCleared { get; }

    public Counter<long> HintCommandIds { get; }

    public Counter<long> DeviceErrors { get; }

    internal static KeyValuePair<string, object?> Outcome(string outcome) => new("outcome", outcome);
}
