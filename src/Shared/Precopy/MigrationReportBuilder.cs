using Migration.Shared.Devices;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Shared.Transport;

namespace Migration.Shared.Precopy;

/// <summary>
/// Fills one attempt's report: configuration up front, a row per round, transfer and participants at the end.
/// </summary>
internal sealed class MigrationReportBuilder
{
    public MigrationReportBuilder(string migrationId, GuestConfig guest, MigrationOptions options)
    {
        Report = new MigrationReport
        {
            MigrationId = migrationId,
            Config = new Dictionary<string, object?>
            {
                ["target"] = options.Target.ToString(),
                ["downtimeLimitMs"] = options.DowntimeLimit.TotalMilliseconds,
                ["maxBandwidthBytesPerSec"] = options.MaxBandwidthBytesPerSecond,
                ["channels"] = options.Channels,
                ["compress"] = options.Compression.ToString().ToLowerInvariant(),
                ["dirtyLog"] = guest.DirtyLogMode.ToString().ToLowerInvariant(),
                ["poison"] = guest.PoisonValue is byte b ? $"0x{b:x2}" : "off",
                ["seed"] = guest.Workload.Seed,
                ["maxRounds"] = options.MaxRounds,
                ["hints"] = options.Hints ? "on" : "off",
                ["waitOnAck"] = guest.WaitOnAck ? "on" : "off",
                ["deltaCacheBytes"] = options.DeltaCacheBytes,
            },
            Guest = MigrationReport.GuestSection.Of(guest),
        };
        Report.Timing.DowntimeLimitMs = options.DowntimeLimit.TotalMilliseconds;
    }

    public MigrationReport Report { get; }

    public MigrationReport.TimingSection Timing => Report.Timing;

    public int RoundCount => Report.Rounds.Count;

    public MigrationReport.RoundSection AddRound(int round, long dirtyAtStart, long sent, long bytes, double ms,
        double dirtyRate, bool final)
    {
        var section = new MigrationReport.RoundSection
        {
            Round = round,
            DirtyPages = dirtyAtStart,
            PagesSent = sent,
            Bytes = bytes,
            Ms = ms,
            DirtyRatePagesPerSec = final ? 0 : dirtyRate,
            Final = final,
        };
        Report.Rounds.Add(section);
        return section;
    }

    public void Ended(MigrationStatus status, string? error)
    {
        Report.Status = status;
        Report.Error = error;
    }

    /// <summary>Totals, throughput and what each participant did.</summary>
    public MigrationReport Finish(TransferCounters counters, double totalMs, IEnumerable<IPrecopyParticipant> joined)
    {
        ArgumentNullException.ThrowIfNull(counters);
        ArgumentNullException.ThrowIfNull(joined);
        Report.Timing.TotalMs = totalMs;
        var transfer = Report.Transfer;
        transfer.BytesOnWire = counters.BytesOnWire;
        transfer.PagesZero = counters.PagesZero;
        transfer.PagesNormal = counters.PagesRaw;
        transfer.PagesCompressed = counters.PagesLz4;
        transfer.PagesDelta = counters.PagesDelta;
        if (counters.DeltaCache is { } cache)
        {
            transfer.Delta = new MigrationReport.DeltaSection
            {
                CacheBytes = cache.CapacityBytes,
                Hits = counters.PagesDelta,
                Misses = counters.DeltaMisses,
                Overflows = counters.DeltaOverflows,
                BytesSaved = counters.DeltaBytesSaved,
            };
        }

        transfer.ThroughputMBps = counters.BytesOnWire / 1e6 / Math.Max(totalMs / 1000, 1e-6);
        foreach (var participant in joined)
        {
            Report.Add(participant.MigrationStats());
        }

        return Report;
    }
}
