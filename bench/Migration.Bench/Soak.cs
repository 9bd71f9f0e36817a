using System.Diagnostics;
using System.Globalization;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Source.Cli;

namespace Migration.Bench;

/// <summary>One migration of the soak, and the long-lived target's footprint once it was over.</summary>
internal sealed record SoakRun
{
    public int Index { get; init; }

    public string Workload { get; init; } = string.Empty;

    public bool Hints { get; init; }

    public string DirtyLog { get; init; } = string.Empty;

    public int Channels { get; init; }

    public bool Ok { get; init; }

    public string? Error { get; init; }

    public double TotalMs { get; init; }

    public double DowntimeMs { get; init; }

    public long BytesOnWire { get; init; }

    /// <summary>The target's resident set (VmRSS) once it was free again.</summary>
    public long TargetRssBytes { get; init; }

    /// <summary>The target's open file descriptors (sockets, files, memory mappings by fd) once it was free again.</summary>
    public int TargetHandles { get; init; }

    public int TargetThreads { get; init; }

    public double WallSeconds { get; init; }
}

/// <summary>
/// What the soak found: every run counted, and from the 10th migration on the target's footprint, as a trend (the
/// mean of the last <see cref="Window"/> migrations against the mean of the first <see cref="Window"/> from the 10th
/// on: a leak grows it, noise does not), as a least-squares slope, and as a range.
/// </summary>
internal sealed record SoakSummary(int Runs, int Verified, int Window, double EarlyRssMean, double LateRssMean,
    double RssSlopeBytesPerMigration, long MinRss, long MaxRss, int HandlesAtTenth, int MaxHandlesFromTenth,
    int ThreadsAtTenth, int ThreadsAtEnd, double WorstDowntimeMs, double DowntimeLimitMs)
{
    /// <summary>How many migrations form each window of the trend at most (half of the settled ones if fewer).</summary>
    public const int MaxWindow = 30;

    public double RssTrend => EarlyRssMean == 0 ? 0 : LateRssMean / EarlyRssMean;

    public static SoakSummary? Of(IReadOnlyList<SoakRun> runs, double downtimeLimitMs)
    {
        var settled = runs.Where(r => r.Index >= 10).ToList();
        int window = Math.Min(MaxWindow, settled.Count / 2);
        if (window < 1)
        {
            return null;
        }

        return new SoakSummary(runs.Count, runs.Count(r => r.Ok), window,
            settled.Take(window).Average(r => (double)r.TargetRssBytes),
            settled.TakeLast(window).Average(r => (double)r.TargetRssBytes),
            Slope(settled.Select(r => ((double)r.Index, (double)r.TargetRssBytes)).ToList()),
            settled.Min(r => r.TargetRssBytes), settled.Max(r => r.TargetRssBytes),
            settled[0].TargetHandles, settled.Max(r => r.TargetHandles),
            settled[0].TargetThreads, runs[^1].TargetThreads,
            runs.Where(r => r.Ok).Select(r => r.DowntimeMs).DefaultIfEmpty().Max(), downtimeLimitMs);
    }

    /// <summary>Least-squares slope of y against x.</summary>
    private static double Slope(List<(double X, double Y)> points)
    {
        double mx = points.Average(p => p.X), my = points.Average(p => p.Y);
        double sxx = points.Sum(p => (p.X - mx) * (p.X - mx));
        return sxx == 0 ? 0 : points.Sum(p => (p.X - mx) * (p.Y - my)) / sxx;
    }
}

/// <summary>
/// Back-to-back migrations of mixed guests into one long-lived target: workloads in turn (idle, stale, busy, churn),
/// hints on and off, both dirty-log modes, one to three channels. Each source is a fresh <c>migrate</c> process; the
/// target runs each guest briefly (<c>--run-after</c>), checks it, stops it and takes the next. After each migration the
/// target's RSS, descriptors and threads are read from /proc, so a leak shows as a slope.
/// </summary>
internal sealed class Soak(string outDir, int migrations, long ramBytes, TextWriter output)
{
    public const double DowntimeLimitMs = 300;
    private static readonly string[][] Workloads =
    [
        ["--workload", "idle", "--page-cache-share", "0.045"],
        ["--workload", "memhog", "--memhog-share", "0.9"],
        ["--workload", "busy", "--busy-dirty-rate", "100MiB/s", "--busy-stale-share", "0.5"],
        ["--workload", "churn"],
    ];

    public async Task<List<SoakRun>> RunAsync(CancellationToken ct)
    {
        string logs = Path.Combine(outDir, "runs", "soak");
        Directory.CreateDirectory(logs);
        var runs = new List<SoakRun>();
        await using var target = await TargetProcess.StartAsync(["--run-after", "0.2"], TimeSpan.FromMinutes(1), ct);
        output.WriteLine($"soak: {migrations} migrations of {ramBytes >> 20} MiB guests into target pid " +
            $"{target.ProcessId}");
        for (int i = 1; i <= migrations && !ct.IsCancellationRequested; i++)
        {
            var run = await OneAsync(target, i, logs, ct);
            runs.Add(run);
            output.WriteLine($"[soak {i,3}] {run.Workload,-6} hints {(run.Hints ? "on " : "off")} " +
                $"{run.DirtyLog,-6} {run.Channels} ch: " +
                (run.Ok ? $"total {run.TotalMs,6:F0} ms downtime {run.DowntimeMs,4:F0} ms" : $"FAILED: {run.Error}") +
                $"  target RSS {run.TargetRssBytes >> 20} MiB, {run.TargetHandles} fds, {run.TargetThreads} threads");
        }

        await File.WriteAllLinesAsync(Path.Combine(logs, "target.log"), target.Output, CancellationToken.None);
        return runs;
    }

    private async Task<SoakRun> OneAsync(TargetProcess target, int i, string logs, CancellationToken ct)
    {
        string[] workload = Workloads[(i - 1) % Workloads.Length];
        bool hints = i % 2 == 1;
        string dirtyLog = (i / 2) % 2 == 0 ? "eager" : "manual";
        int channels = 1 + ((i - 1) % 3);
        string report = Path.Combine(logs, $"{i:D3}.source.json");
        var args = new List<string>
        {
            "migrate", "--target", target.Address.ToString(), "--ram", $"{ramBytes >> 20}MiB", "--vcpus", "2",
            "--seed", i.ToString(CultureInfo.InvariantCulture), "--warmup-seconds", "0.5",
            "--downtime-ms", DowntimeLimitMs.ToString(CultureInfo.InvariantCulture),
            "--channels", channels.ToString(CultureInfo.InvariantCulture), "--hints", hints ? "on" : "off",
            "--dirty-log", dirtyLog, "--report", report,
        };
        args.AddRange(workload);
        var watch = Stopwatch.StartNew();
        string? error = null;
        MigrationReport? result = null;
        try
        {
            int exit = await ChildProcess.RunSourceAsync(args, Path.Combine(logs, $"{i:D3}.source.log"),
                TimeSpan.FromMinutes(5), ct);
            result = File.Exists(report) ? MigrationReport.FromJson(await File.ReadAllTextAsync(report, ct)) : null;
            error = result is { Status: MigrationStatus.Completed, Verified: true }
                ? null
                : result is null ? $"no report (exit code {exit})" : $"{result.Status}: {result.Error}";
            // The target has run the guest, checked and stopped it, and is ready for the next one.
            await target.WaitForStateAsync(TimeSpan.FromMinutes(1), "idle", "failed");
        }
        catch (Exception ex) when (ex is TimeoutException or IOException or InvalidOperationException)
        {
            error = ex.Message;
        }

        var footprint = Footprint.Of(target.ProcessId);
        return new SoakRun
        {
            Index = i,
            Workload = workload[1],
            Hints = hints,
            DirtyLog = dirtyLog,
            Channels = channels,
            Ok = error is null,
            Error = error,
            TotalMs = result?.Timing.TotalMs ?? 0,
            DowntimeMs = result?.Timing.DowntimeMs ?? 0,
            BytesOnWire = result?.Transfer.BytesOnWire ?? 0,
            TargetRssBytes = footprint.RssBytes,
            TargetHandles = footprint.Handles,
            TargetThreads = footprint.Threads,
            WallSeconds = watch.Elapsed.TotalSeconds,
        };
    }

    /// <summary>A process's resident set, open descriptors and threads, from /proc.</summary>
    private readonly record struct Footprint(long RssBytes, int Handles, int Threads)
    {
        public static Footprint Of(int pid)
        {
            long rss = 0;
            int threads = 0;
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                {
                    rss = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1],
                        CultureInfo.InvariantCulture) * 1024;
                }
                else if (line.StartsWith("Threads:", StringComparison.Ordinal))
                {
                    threads = int.Parse(line.Split('\t', StringSplitOptions.RemoveEmptyEntries)[1].Trim(),
                        CultureInfo.InvariantCulture);
                }
            }

            return new Footprint(rss, Directory.GetFiles($"/proc/{pid}/fd").Length, threads);
        }
    }
}
