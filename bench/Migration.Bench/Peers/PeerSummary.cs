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

    public static IReadOnlyList<PeerRow> Of(PeerResults peer) =>
        [.. peer.Runs.GroupBy(r => (r.Engine, r.Work)).OrderBy(g => Order(g.Key.Work)).ThenBy(g => g.Key.Engine)
            .Select(g =>
            {
                var ok = g.Where(r => r.Ok).ToList();
                return new PeerRow(g.Key.Engine, g.Key.Work, ok.Count, g.Count() - ok.Count,
                    Spread.Of(ok.Select(r => r.GBps)), Spread.Of(ok.Select(r => r.TotalMs)),
                    Spread.Of(ok.Select(r => r.DowntimeMs)),
                    Spread.Of(ok.Where(r => r.StopToResumeMs is not null).Select(r => r.StopToResumeMs!.Value)),
                    Spread.Of(ok.Select(r => (double)r.BytesOnWire)),
                    Spread.Of(ok.Select(r => r.SourceCpuSeconds / Math.Max(r.BytesOnWire / 1e9, 1e-9))),
                    Spread.Of(ok.Select(r => r.TargetCpuSeconds / Math.Max(r.BytesOnWire / 1e9, 1e-9))));
            })];

    private static int Order(string work) => work switch
    {
        "random-1ch" => 0,
        "random-2ch" => 1,
        "random-4ch" => 2,
        "idle" or "idle-hints" => 3,
        _ => 4,
    };
}

/// <summary>Ours against QEMU on one work, as ratios of medians (ours / QEMU).</summary>
internal sealed record PeerRatio(string Work, double? Throughput, double? SourceCpuPerGB, double? TargetCpuPerGB,
    double? TotalTime, double? GuestStopped)
{
    public static IReadOnlyList<PeerRatio> Of(IReadOnlyList<PeerRow> rows)
    {
        var list = new List<PeerRatio>();
        foreach (var ours in rows.Where(r => r.Engine == PeerRun.Ours))
        {
            // QEMU's idle VM runs no hinting driver: ours with hints and without both meet its one row.
            string qemuWork = ours.Work.StartsWith("idle", StringComparison.Ordinal) ? "idle" : ours.Work;
            if (rows.FirstOrDefault(r => r.Engine == PeerRun.Qemu && r.Work == qemuWork) is not { } qemu)
            {
                continue;
            }

            list.Add(new PeerRatio(ours.Work, Ratio(ours.GBps, qemu.GBps),
                Ratio(ours.SourceCpuPerGB, qemu.SourceCpuPerGB), Ratio(ours.TargetCpuPerGB, qemu.TargetCpuPerGB),
                Ratio(ours.TotalMs, qemu.TotalMs), Ratio(ours.GuestStoppedMs, qemu.GuestStoppedMs)));
        }

        return list;
    }

    private static double? Ratio(Spread? a, Spread? b) =>
        a is null || b is null || b.Median == 0 ? null : a.Median / b.Median;
}
