using Migration.Bench.Floor;

namespace Migration.Bench.Peers;

/// <summary>What the side-by-side runs of the peer comparison hold: where QEMU came from, or why it did not run.</summary>
internal sealed class PeerResults
{
    public string? QemuVersion { get; set; }

    /// <summary>Why QEMU could not run (then only our rows exist), or null.</summary>
    public string? Unavailable { get; set; }

    public long RamBytes { get; set; }

    /// <summary>The Linux guest of QEMU's stale-memory rows, or null.</summary>
    public LinuxGuest? LinuxGuest { get; set; }

    /// <summary>Why QEMU's Linux guest rows could not run, or null.</summary>
    public string? LinuxUnavailable { get; set; }

    public List<PeerRun> Runs { get; set; } = [];

    /// <summary>
    /// The .NET socket floor (plain sockets, as <c>--only floor</c>) at the random RAM's size and channel counts,
    /// interleaved with both engines' random RAM runs.
    /// </summary>
    public List<FloorRun> Floor { get; set; } = [];
}

/// <summary>Min, median and max of one figure over the runs that completed.</summary>
internal sealed record Spread(double Min, double Median, double Max)
{
    public static Spread? Of(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        if (sorted.Count == 0)
        {
            return null;
        }

        int n = sorted.Count;
        double median = n % 2 == 1 ? sorted[n / 2] : (sorted[(n / 2) - 1] + sorted[n / 2]) / 2;
        return new Spread(sorted[0], median, sorted[^1]);
    }

    public string Format(string format) =>
        $"{Min.ToString(format, null)} / {Median.ToString(format, null)} / {Max.ToString(format, null)}";
}

/// <summary>One engine on one work: its runs in figures (min / median / max).</summary>
internal sealed record PeerRow(string Engine, string Work, int Runs, int Failed, Spread? GBps, Spread? TotalMs,
    Spread? DowntimeMs, Spread? StopToResumeMs, Spread? BytesOnWire, Spread? SourceCpuPerGB, Spread? TargetCpuPerGB)
{
    /// <summary>The guest-visible stop: ours' downtime; QEMU's STOP to RESUME where it has one.</summary>
    public Spread? GuestStoppedMs => Engine == PeerRun.Qemu && StopToResumeMs is not null ? StopToResumeMs : DowntimeMs;

    /// <summary>
    /// A row per engine and work, work by work, QEMU before ours before the floor; the floor's rows are random RAM
    /// only, with its rate (RAM over the sender's transfer time) and each process's CPU over the transfer.
    /// </summary>
    public static IReadOnlyList<PeerRow> Of(PeerResults peer)
    {
        ArgumentNullException.ThrowIfNull(peer);
        return
        [
            .. peer.Runs.GroupBy(r => (r.Engine, r.Work)).Select(g => OfRuns(g.Key.Engine, g.Key.Work, [.. g]))
                .Concat(peer.Floor.GroupBy(r => r.Channels).Select(g => OfFloor(g.Key, [.. g])))
                .OrderBy(r => Order(r.Work)).ThenBy(r => EngineOrder(r.Engine)),
        ];
    }

    private static PeerRow OfRuns(string engine, string work, List<PeerRun> runs)
    {
        var ok = runs.Where(r => r.Ok).ToList();
        return new PeerRow(engine, work, ok.Count, runs.Count - ok.Count,
            Spread.Of(ok.Select(r => r.GBps)), Spread.Of(ok.Select(r => r.TotalMs)),
            Spread.Of(ok.Select(r => r.DowntimeMs)),
            Spread.Of(ok.Where(r => r.StopToResumeMs is not null).Select(r => r.StopToResumeMs!.Value)),
            Spread.Of(ok.Select(r => (double)r.BytesOnWire)),
            Spread.Of(ok.Select(r => r.SourceCpuSeconds / Math.Max(r.BytesOnWire / 1e9, 1e-9))),
            Spread.Of(ok.Select(r => r.TargetCpuSeconds / Math.Max(r.BytesOnWire / 1e9, 1e-9))));
    }

    /// <summary>The floor at one channel count, figured as <see cref="FloorRow"/>; no guest, so no stop.</summary>
    private static PeerRow OfFloor(int channels, List<FloorRun> runs)
    {
        var ok = runs.Where(r => r.Ok).ToList();
        return new PeerRow(PeerRun.Floor, PeerRun.RandomWork(channels), ok.Count, runs.Count - ok.Count,
            Spread.Of(ok.Select(r => r.Sender!.Bytes / r.Sender.Seconds / 1e9)),
            Spread.Of(ok.Select(r => r.Sender!.Seconds * 1000)), DowntimeMs: null, StopToResumeMs: null,
            Spread.Of(ok.Select(r => (double)r.Sender!.Bytes)),
            Spread.Of(ok.Select(r => r.Sender!.CpuSeconds / Math.Max(r.Sender.Bytes / 1e9, 1e-9))),
            Spread.Of(ok.Select(r => r.Receiver!.CpuSeconds / Math.Max(r.Receiver.Bytes / 1e9, 1e-9))));
    }

    private static int EngineOrder(string engine) => engine switch
    {
        PeerRun.Qemu => 0,
        PeerRun.Ours => 1,
        PeerRun.Floor => 2,
        _ => 3,
    };

    /// <summary>Random RAM by channel count, then idle (with hints and without), then the rest.</summary>
    private static int Order(string work) => PeerRun.RandomChannels(work) ?? (work is "idle" or "idle-hints"
        ? int.MaxValue - 1
        : int.MaxValue);
}

/// <summary>Ours against a baseline engine (QEMU or the floor) on one work, as ratios of medians (ours / it).</summary>
internal sealed record PeerRatio(string Work, double? Throughput, double? SourceCpuPerGB, double? TargetCpuPerGB,
    double? TotalTime, double? GuestStopped)
{
    /// <summary>Ours against <paramref name="baseline"/> on every work both ran.</summary>
    public static IReadOnlyList<PeerRatio> Of(IReadOnlyList<PeerRow> rows, string baseline = PeerRun.Qemu)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var list = new List<PeerRatio>();
        foreach (var ours in rows.Where(r => r.Engine == PeerRun.Ours))
        {
            // QEMU's idle VM runs no hinting driver: ours with hints and without both meet its one row.
            string baseWork = ours.Work.StartsWith("idle", StringComparison.Ordinal) ? "idle" : ours.Work;
            if (rows.FirstOrDefault(r => r.Engine == baseline && r.Work == baseWork) is { } other)
            {
                list.Add(Between(ours, other));
            }
        }

        return list;
    }

    /// <summary>
    /// Ours' medians over <paramref name="baseline"/>'s; each null where either has none, or the baseline's is 0.
    /// </summary>
    public static PeerRatio Between(PeerRow ours, PeerRow baseline)
    {
        ArgumentNullException.ThrowIfNull(ours);
        ArgumentNullException.ThrowIfNull(baseline);
        return new PeerRatio(ours.Work, Ratio(ours.GBps, baseline.GBps),
            Ratio(ours.SourceCpuPerGB, baseline.SourceCpuPerGB), Ratio(ours.TargetCpuPerGB, baseline.TargetCpuPerGB),
            Ratio(ours.TotalMs, baseline.TotalMs), Ratio(ours.GuestStoppedMs, baseline.GuestStoppedMs));
    }

    private static double? Ratio(Spread? a, Spread? b) =>
        a is null || b is null || b.Median == 0 ? null : a.Median / b.Median;
}

/// <summary>
/// Random RAM at one channel count: QEMU, ours and the .NET socket floor side by side, and ours against each.
/// </summary>
internal sealed record PeerRandomRow(int Channels, PeerRow? Qemu, PeerRow? Ours, PeerRow? Floor)
{
    public PeerRatio? OursToQemu => Ours is null || Qemu is null ? null : PeerRatio.Between(Ours, Qemu);

    public PeerRatio? OursToFloor => Ours is null || Floor is null ? null : PeerRatio.Between(Ours, Floor);

    /// <summary>A row per channel count any engine ran random RAM at, in channel order.</summary>
    public static IReadOnlyList<PeerRandomRow> Of(IReadOnlyList<PeerRow> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        return
        [
            .. rows.Select(r => PeerRun.RandomChannels(r.Work)).OfType<int>().Distinct().Order().Select(channels =>
            {
                PeerRow? Of(string engine) =>
                    rows.FirstOrDefault(r => r.Engine == engine && r.Work == PeerRun.RandomWork(channels));
                return new PeerRandomRow(channels, Of(PeerRun.Qemu), Of(PeerRun.Ours), Of(PeerRun.Floor));
            }),
        ];
    }
}
