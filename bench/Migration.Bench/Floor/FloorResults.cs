using System.Globalization;
using System.Text;
using System.Text.Json.Serialization;
using Migration.Bench.Peers;

namespace Migration.Bench.Floor;

/// <summary>The floor (<c>--only floor</c>): plain socket transfers and the page stream beside them.</summary>
internal sealed class FloorResults
{
    /// <summary>Guest RAM of both the floor's transfers and the page stream's guests.</summary>
    public long RamBytes { get; set; }

    public List<FloorRun> Runs { get; set; } = [];

    /// <summary>The gRPC page stream at the same channel counts, interleaved with the floor's runs.</summary>
    public List<BenchRun> Stream { get; set; } = [];

    /// <summary>Guest RAM when <c>--floor-ram</c> is not given: 1 GiB with <c>--quick</c>, else 4 GiB.</summary>
    public static long DefaultRamBytes(bool quick) => quick ? 1L << 30 : 4L << 30;

    /// <summary>The scenario name of the page stream's run at <paramref name="channels"/>.</summary>
    public static string StreamScenario(int channels) => $"floor-stream-{channels}ch";
}

/// <summary>One plain socket transfer: both processes' own figures, and whether their RAM ended up the same.</summary>
internal sealed class FloorRun
{
    public required int Channels { get; init; }

    public required int Repeat { get; init; }

    public FloorSide? Sender { get; set; }

    public FloorSide? Receiver { get; set; }

    /// <summary>Why the run does not count, or null.</summary>
    public string? Error { get; set; }

    public string? Log { get; set; }

    /// <summary>Both sides finished and digested the same RAM.</summary>
    [JsonIgnore]
    public bool Ok => Error is null && Sender is { Error: null, Digest: not null, Seconds: > 0 }
        && Receiver is { Error: null } && Receiver.Digest == Sender.Digest;

    /// <summary>
    /// Checks what the two processes printed (<see cref="FloorSide.Parse"/>) and sets <see cref="Error"/> when they
    /// disagree or one failed.
    /// </summary>
    public void Judge()
    {
        Error ??= Sender is null ? "the sender printed no result"
            : Receiver is null ? "the receiver printed no result"
            : Sender.Error is { } s ? $"sender: {s}"
            : Receiver.Error is { } r ? $"receiver: {r}"
            : Sender.Bytes != Receiver.Bytes ? $"sent {Sender.Bytes} bytes, received {Receiver.Bytes}"
            : Sender.Digest != Receiver.Digest ? $"RAM differs: digest {Sender.Digest} sent, {Receiver.Digest} received"
            : null;
    }
}

/// <summary>
/// One channel count: the floor and the page stream in figures (GB = 10^9 bytes), and the stream against the floor.
/// </summary>
/// <param name="FloorGBps">The floor's rate: RAM over the sender's time (connect to the last acknowledgement).</param>
/// <param name="StreamGBps">The page stream's rate: round 0's bytes over its time, as the raw stream's.</param>
/// <param name="SourceCpuPerGB">The source's CPU seconds over the migration per GB on the wire (median).</param>
internal sealed record FloorRow(int Channels, int FloorRuns, int FloorFailed, Spread? FloorGBps,
    double? SenderCpuPerGB, double? ReceiverCpuPerGB, int StreamRuns, int StreamFailed, Spread? StreamGBps,
    double? SourceCpuPerGB, double? TargetCpuPerGB)
{
    public double? Throughput => StreamGBps?.Median / FloorGBps?.Median;

    public double? SourceCpuRatio => SourceCpuPerGB / SenderCpuPerGB;

    public double? TargetCpuRatio => TargetCpuPerGB / ReceiverCpuPerGB;

    /// <summary>A row per channel count that ran, in channel order; medians over the runs that verified.</summary>
    public static List<FloorRow> Of(FloorResults floor)
    {
        ArgumentNullException.ThrowIfNull(floor);
        var counts = floor.Runs.Select(r => r.Channels)
            .Concat(floor.Stream.Select(r => ChannelsOf(r.Scenario)).OfType<int>())
            .Distinct().Order();
        var rows = new List<FloorRow>();
        foreach (int channels in counts)
        {
            var runs = floor.Runs.Where(r => r.Channels == channels).ToList();
            var ok = runs.Where(r => r.Ok).ToList();
            var stream = floor.Stream.Where(r => ChannelsOf(r.Scenario) == channels).ToList();
            var okStream = stream.Where(r => r.Ok && BenchSummary.RoundZeroRate(r) > 0).ToList();
            rows.Add(new FloorRow(channels, runs.Count, runs.Count - ok.Count,
                Spread.Of(ok.Select(r => r.Sender!.Bytes / r.Sender.Seconds / 1e9)),
                Spread.Of(ok.Select(r => r.Sender!.CpuSeconds / (r.Sender.Bytes / 1e9)))?.Median,
                Spread.Of(ok.Select(r => r.Receiver!.CpuSeconds / (r.Receiver.Bytes / 1e9)))?.Median,
                stream.Count, stream.Count - okStream.Count,
                Spread.Of(okStream.Select(r => BenchSummary.RoundZeroRate(r) / 1e9)),
                Spread.Of(okStream.Select(r => (r.Source!.Process?.MigrationCpuSeconds ?? 0)
                    / (r.Source.Transfer.BytesOnWire / 1e9)))?.Median,
                Spread.Of(okStream.Select(r => (r.TargetProcess?.MigrationCpuSeconds ?? 0)
                    / (r.Source!.Transfer.BytesOnWire / 1e9)))?.Median));
        }

        return rows;
    }

    /// <summary>The channel count in a page stream run's scenario name (floor-stream-2ch), or null.</summary>
    public static int? ChannelsOf(string scenario)
    {
        const string prefix = "floor-stream-";
        return scenario is not null && scenario.StartsWith(prefix, StringComparison.Ordinal)
            && scenario.EndsWith("ch", StringComparison.Ordinal)
            && int.TryParse(scenario.AsSpan(prefix.Length, scenario.Length - prefix.Length - 2),
                NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n > 0
            ? n
            : null;
    }
}

/// <summary>The floor's section of results.md.</summary>
internal static class FloorMarkdown
{
    public static string Write(BenchResults results)
    {
        ArgumentNullException.ThrowIfNull(results);
        if (results.Floor is not { } floor || floor.Runs.Count + floor.Stream.Count == 0)
        {
            return string.Empty;
        }

        var inv = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        md.AppendLine("## The floor: plain sockets against the page stream (same sitting, interleaved)");
        md.AppendLine();
        md.AppendLine((floor.RamBytes >> 20).ToString(inv) + " MiB of random guest RAM. Floor: one process sends " +
            "its mapping " +
            "with 1 MiB socket writes over 1, 2 or 4 loopback TCP connections, another receives each straight " +
            "into the same offsets of its own preallocated mapping, then both digest their RAM (equal in every " +
            "run counted); each process's CPU time over the transfer alone, rate = RAM / the sender's time. Page " +
            "stream: a migration of a guest whose RAM is 90% random data and that writes nothing, hints off; rate = " +
            "round 0's bytes / its time, CPU = each process's over the whole migration per GB on the wire. Floor " +
            "and stream alternate within each repeat. GB = 10^9 bytes; min / median / max.");
        md.AppendLine();
        md.AppendLine("| channels | floor GB/s | floor CPU s/GB sender + receiver | page stream GB/s | " +
            "stream CPU s/GB source + target | stream / floor: GB/s | source / sender CPU per GB | " +
            "target / receiver CPU per GB |");
        md.AppendLine("|---:|---|---|---|---|---:|---:|---:|");
        foreach (var row in FloorRow.Of(floor))
        {
            md.AppendLine(inv, $"| {row.Channels} | {Spread(row.FloorGBps, row.FloorFailed)} | " +
                $"{F(row.SenderCpuPerGB)} + {F(row.ReceiverCpuPerGB)} | {Spread(row.StreamGBps, row.StreamFailed)} | " +
                $"{F(row.SourceCpuPerGB)} + {F(row.TargetCpuPerGB)} | **{F(row.Throughput)}** | " +
                $"{F(row.SourceCpuRatio)} | {F(row.TargetCpuRatio)} |");
        }

        var iperf = results.Iperf3.Where(i => i.BytesPerSecond is not null)
            .Select(i => i.BytesPerSecond!.Value / 1e9).ToList();
        md.AppendLine();
        md.AppendLine(iperf.Count > 0
            ? string.Create(inv, $"iperf3 (one TCP stream, loopback) in the same sitting: " +
                $"{string.Join(" and ", iperf.Select(g => g.ToString("F2", inv)))} GB/s.")
            : "iperf3: n/a (see the link table above).");
        var failed = floor.Runs.Where(r => !r.Ok).ToList();
        foreach (var run in failed)
        {
            md.AppendLine();
            md.AppendLine(inv, $"Floor run at {run.Channels} channel(s), repeat {run.Repeat}, failed: {run.Error}");
        }

        md.AppendLine();
        return md.ToString();
    }

    private static string Spread(Spread? spread, int failed) =>
        (spread is null ? "n/a" : spread.Format("F2")) + (failed > 0 ? $" ({failed} failed)" : string.Empty);

    private static string F(double? value) =>
        value is double v ? v.ToString("F2", CultureInfo.InvariantCulture) : "n/a";
}
