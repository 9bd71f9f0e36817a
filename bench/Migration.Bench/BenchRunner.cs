using System.Diagnostics;
using System.Text.Json;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Source.Cli;
using Migration.TestSupport;

namespace Migration.Bench;

/// <summary>What <c>bench</c> was asked to do.</summary>
internal sealed record BenchOptions(bool Quick, string OutDir, int Repeat, IReadOnlyList<string>? Only = null,
    int SoakMigrations = 100, string? Peer = null, ConvergeQemuOptions? Converge = null, string? Qemu = null,
    long? FloorRamBytes = null)
{
    /// <summary>
    /// Whether a part runs: everything by default (except the parts only <c>--only</c> runs); with --only the parts
    /// named; with --peer only it.
    /// </summary>
    public bool Runs(string name) => Only?.Contains(name) ?? (Peer is null && !OnlyWhenNamed.Contains(name));

    /// <summary>Parts too long for the default run (the comparison: 25 migrations per repeat).</summary>
    public static readonly string[] OnlyWhenNamed =
        ["compare", "reporting-cost", "downtime", "converge", "converge-qemu", "floor"];

    /// <summary>The parts of <c>--peer</c>, which <c>--only</c> may name.</summary>
    public static readonly string[] PeerParts = ["peer-random", "peer-idle", "peer-stale"];

    /// <summary>Whether a part of the peer comparison runs: all of them unless --only names some.</summary>
    public bool RunsPeerPart(string part) => Only?.Any(PeerParts.Contains) != true || Only.Contains(part);
}

/// <summary>
/// The benchmark: the loopback link (iperf3 against our raw page stream, cleartext and mutual TLS, in the same
/// sitting), then every scenario on every link, hints off and on interleaved (off, on, off, on ...) so that drift on a
/// shared machine hits both alike, then the soak (one long-lived target, many migrations).
/// Each migration is a fresh target process and a fresh source process, exactly as a user runs them; both report their
/// own CPU time and peak RSS. Results go to DIR as they come (results.json), then the tables and charts.
/// </summary>
internal sealed partial class BenchRunner(BenchOptions options, TextWriter output)
{
    private static readonly TimeSpan RunTimeout = TimeSpan.FromMinutes(15);
    private readonly BenchResults _results = new();
    private int _runIndex;

    public async Task<int> RunAsync(CancellationToken ct)
    {
        Directory.CreateDirectory(Path.Combine(options.OutDir, "runs"));
        _results.Machine = MachineInfo.Capture();
        _results.Quick = options.Quick;
        _results.Repeat = options.Repeat;
        _results.Only = options.Only?.ToList();
        _results.StartedAt = DateTimeOffset.UtcNow;
        var scenarios = BenchScenario.All(options.Quick).Where(s => options.Runs(s.Name)).ToList();
        output.WriteLine($"bench: {_results.Machine.Describe()}");
        output.WriteLine($"bench: {(options.Quick ? "quick (1 GiB guests)" : "full (8 GiB guests)")}, " +
            $"{options.Repeat} repeat(s), results in {Path.GetFullPath(options.OutDir)}");

        if (options.Runs("raw"))
        {
            await MeasureLinkAsync(ct);
        }

        if (options.Runs("floor"))
        {
            await RunFloorAsync(ct);
        }

        foreach (var scenario in scenarios)
        {
            foreach (var link in BenchScenario.Links)
            {
                for (int repeat = 1; repeat <= options.Repeat; repeat++)
                {
                    foreach (bool hints in new[] { false, true })
                    {
                        var run = await RunMigrationAsync(scenario.Name, scenario.RamBytes, scenario.WorkloadArgs,
                            link, hints, repeat, channels: 2, ct);
                        _results.Runs.Add(run);
                        Save();
                    }
                }
            }
        }

        if (options.Runs("scale"))
        {
            await RunScaleAsync(ct);
        }

        if (options.Runs("balloon"))
        {
            await RunBalloonAsync(ct);
        }

        if (options.Runs("compare") || options.Runs("reporting-cost"))
        {
            await MeasureReportingCostAsync(ct);
        }

        if (options.Runs("compare"))
        {
            await RunCompareAsync(ct);
        }

        if (options.Runs("downtime"))
        {
            await RunDowntimeAsync(ct);
        }

        if (options.Runs("converge"))
        {
            await RunConvergeAsync(ct);
        }

        if (options.Peer is not null)
        {
            await RunPeersAsync(ct);
        }

        if (options.Runs("converge-qemu"))
        {
            await RunConvergeQemuAsync(ct);
        }

        if (options.Runs("soak"))
        {
            var soak = new Soak(options.OutDir, options.SoakMigrations, options.Quick ? 128L << 20 : 256L << 20,
                output);
            _results.Soak = await soak.RunAsync(ct);
            Save();
        }

        _results.FinishedAt = DateTimeOffset.UtcNow;
        return await RenderAsync(_results, options.OutDir, output, ct);
    }

    /// <summary>
    /// Tables and charts from a results.json written earlier (<c>--render DIR</c>), with this build's summary rules.
    /// </summary>
    public static async Task<int> RenderAsync(string dir, TextWriter output, CancellationToken ct)
    {
        string path = Path.Combine(dir, "results.json");
        var results = JsonSerializer.Deserialize<BenchResults>(await File.ReadAllTextAsync(path, ct),
            MigrationReport.JsonOptions) ?? throw new JsonException($"{path} holds no results");
        return await RenderAsync(results, dir, output, ct);
    }

    private static async Task<int> RenderAsync(BenchResults results, string dir, TextWriter output,
        CancellationToken ct)
    {
        var scenarios = BenchScenario.All(results.Quick)
            .Where(s => results.Only?.Contains(s.Name) ?? results.Peer is null)
            .ToList();
        var summary = BenchSummary.Build(results, scenarios);
        results.Summary = summary;
        await File.WriteAllTextAsync(Path.Combine(dir, "results.json"),
            JsonSerializer.Serialize(results, MigrationReport.JsonOptions), ct);
        string md = BenchMarkdown.Write(results, summary, scenarios) + BalloonMarkdown(results)
            + CompareMarkdown(results) + ConvergeQemuMarkdown(results) + BesideQemuMarkdown(results)
            + Floor.FloorMarkdown.Write(results);
        await File.WriteAllTextAsync(Path.Combine(dir, "results.md"), md, ct);
        var charts = BenchCharts.Write(results, scenarios, dir);
        output.WriteLine();
        output.WriteLine(md);
        output.WriteLine($"bench: wrote results.json, results.md and {charts.Count} charts " +
            $"to {Path.GetFullPath(dir)}");
        int failed = results.Runs.Count(r => !r.Ok) + results.RawStream.Count(r => !r.Ok)
            + (results.Peer is { } peer ? peer.Runs.Count(r => !r.Ok) + peer.Floor.Count(r => !r.Ok) : 0)
            + (results.ConvergeQemu?.Runs.Count(r => !r.Ok) ?? 0)
            + results.Soak.Count(r => !r.Ok)
            + (results.Floor is { } floor ? floor.Runs.Count(r => !r.Ok) + floor.Stream.Count(r => !r.Ok) : 0);
        if (failed > 0)
        {
            output.WriteLine($"bench: {failed} run(s) failed; see their logs under runs/");
        }

        return failed == 0 ? 0 : 1;
    }

    /// <summary>
    /// iperf3 on loopback, then the raw page stream at 2 and 4 channels in cleartext and over mutual TLS (cleartext
    /// and TLS alternate, so drift hits both alike), then iperf3 again.
    /// </summary>
    private async Task MeasureLinkAsync(CancellationToken ct)
    {
        int seconds = options.Quick ? 3 : 5;
        _results.Iperf3.Add(await Iperf3.RunAsync(seconds, output, ct));
        long ram = options.Quick ? 1L << 30 : 4L << 30;
        // Random content, no guest activity: memhog leaves 90% of RAM full of random data, then the guest does nothing.
        string[] args = ["--workload", "memhog", "--memhog-share", "0.9", "--idle-dirty-pages", "0"];
        using var pki = TestCertificates.Create();
        string[] tlsTarget =
        [
            "--listen", "https://127.0.0.1:0", "--tls-cert", pki.ServerCertificatePath,
            "--tls-key", pki.ServerKeyPath, "--tls-client-ca", pki.CaPath,
        ];
        string[] tlsSource =
        [
            "--tls-ca", pki.CaPath, "--tls-client-cert", pki.ClientCertificatePath,
            "--tls-client-key", pki.ClientKeyPath,
        ];
        foreach (int channels in new[] { 2, 4 })
        {
            foreach (bool tls in new[] { false, true })
            {
                var run = await RunMigrationAsync($"raw-stream-{channels}ch{(tls ? TlsSuffix : "")}", ram, args,
                    BenchScenario.Uncapped, hints: false, repeat: 1, channels, ct,
                    tls ? tlsTarget : [], tls ? tlsSource : []);
                _results.RawStream.Add(run);
                Save();
            }
        }

        _results.Iperf3.Add(await Iperf3.RunAsync(seconds, output, ct));
        Save();
    }

    /// <summary>The raw-stream runs over mutual TLS carry this after their channel count.</summary>
    public const string TlsSuffix = "-mtls";

    private async Task<BenchRun> RunMigrationAsync(string scenario, long ramBytes, IReadOnlyList<string> workloadArgs,
        BenchLink link, bool hints, int repeat, int channels, CancellationToken ct,
        IReadOnlyList<string>? targetArgs = null, IReadOnlyList<string>? sourceArgs = null, bool prealloc = true,
        int vcpus = 2)
    {
        int index = ++_runIndex;
        string stem = Path.Combine(options.OutDir, "runs",
            $"{index:D2}-{scenario}-{link.Name}-hints-{(hints ? "on" : "off")}-{repeat}");
        var run = new BenchRun
        {
            Scenario = scenario,
            Link = link.Name,
            Hints = hints,
            Repeat = repeat,
            SourceLog = Path.GetRelativePath(options.OutDir, stem + ".source.log"),
            TargetLog = Path.GetRelativePath(options.OutDir, stem + ".target.log"),
        };
        string ram = $"{ramBytes >> 20}MiB";
        var sw = Stopwatch.StartNew();
        try
        {
            string[] backing = prealloc ? ["--prealloc", ram] : [];
            await using var target = await TargetProcess.StartAsync(
                ["--once", .. backing, "--report", stem + ".target.json", .. targetArgs ?? []],
                TimeSpan.FromMinutes(3), ct);
            var args = new List<string>
            {
                "migrate", "--target", target.Address.ToString(), "--ram", ram, "--vcpus", $"{vcpus}", "--seed", "1",
                "--warmup-seconds", "1", "--downtime-ms", "300", "--channels", channels.ToString(),
                "--hints", hints ? "on" : "off", "--report", stem + ".source.json",
            };
            args.AddRange(workloadArgs);
            args.AddRange(sourceArgs ?? []);
            if (link.MaxBandwidth is not null)
            {
                args.AddRange(["--max-bandwidth", link.MaxBandwidth]);
            }

            run.SourceExitCode = await ChildProcess.RunSourceAsync(args, stem + ".source.log", RunTimeout, ct);
            try
            {
                run.TargetExitCode = await target.WaitForExitAsync(TimeSpan.FromSeconds(60));
            }
            catch (TimeoutException)
            {
                run.Error = "the target did not exit after the migration";
            }

            await File.WriteAllLinesAsync(stem + ".target.log", target.Output, CancellationToken.None);
            if (File.Exists(stem + ".source.json"))
            {
                run.Source = MigrationReport.FromJson(await File.ReadAllTextAsync(stem + ".source.json", ct));
            }

            if (File.Exists(stem + ".target.json"))
            {
                using var doc = JsonDocument.Parse(await File.ReadAllTextAsync(stem + ".target.json", ct));
                run.Target = doc.RootElement.Clone();
                if (run.Target.Value.TryGetProperty("process", out var p))
                {
                    run.TargetProcess = p.Deserialize<ProcessStats>(MigrationReport.JsonOptions);
                }
            }

            run.Error ??= run.Source is null
                ? $"the source wrote no report (exit code {run.SourceExitCode})"
                : run.Source.Status != MigrationStatus.Completed || !run.Source.Verified
                    ? $"{run.Source.Status}: {run.Source.Error}"
                    : null;
        }
        catch (Exception ex) when (ex is TimeoutException or InvalidOperationException or IOException or JsonException)
        {
            run.Error = ex.Message;
        }

        run.WallSeconds = sw.Elapsed.TotalSeconds;
        output.WriteLine(Describe(index, run));
        return run;
    }

    private static string Describe(int index, BenchRun run)
    {
        if (!run.Ok || run.Source is not { } r)
        {
            return $"[{index,2}] {run.Label,-34} FAILED: {run.Error}";
        }

        return $"[{index,2}] {run.Label,-34} total {r.Timing.TotalMs,7:F0} ms  " +
               $"downtime {r.Timing.DowntimeMs,5:F0} ms  {r.Transfer.BytesOnWire / 1e6,8:F1} MB  " +
               $"skipped {r.Transfer.PagesSkippedByHints,9:N0}/{r.Transfer.PagesSkippedAsDiscarded:N0}/" +
               $"{r.Transfer.PagesSkippedAsBallooned:N0} pages (hint/discarded/balloon)  " +
               $"cpu {r.Process?.MigrationCpuSeconds ?? 0,5:F1}+" +
               $"{run.TargetProcess?.MigrationCpuSeconds ?? 0,4:F1} s  ({run.WallSeconds:F0} s wall)";
    }

    private void Save()
    {
        string path = Path.Combine(options.OutDir, "results.json");
        File.WriteAllText(path, JsonSerializer.Serialize(_results, MigrationReport.JsonOptions));
    }
}
