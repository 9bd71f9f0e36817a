using Migration.Shared;
using System.CommandLine;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;
using Migration.Source.Cli;
using Migration.Source.Precopy;

// Exit codes: 0 = completed and verified, 1 = migration failed or was cancelled, 2 = bad usage.
var target = new Option<string>("--target") { Description = "Target URL, e.g. http://127.0.0.1:50051", Required = true };
var ram = new Option<string>("--ram") { Description = "Guest RAM (e.g. 1GiB, 512MiB)", DefaultValueFactory = _ => "1GiB" };
var vcpus = new Option<int>("--vcpus") { Description = "vCPUs", DefaultValueFactory = _ => 2 };
var workload = new Option<string>("--workload") { Description = "idle | memhog | busy | churn | ab", DefaultValueFactory = _ => "idle" };
var warmup = new Option<double>("--warmup-seconds") { Description = "Let the workload run this long (and until it settles) before migrating", DefaultValueFactory = _ => 1 };
var downtime = new Option<double>("--downtime-ms") { Description = "Downtime limit", DefaultValueFactory = _ => 300 };
var bandwidth = new Option<string?>("--max-bandwidth") { Description = "Cap, e.g. 10Gbit or 500MB/s (default uncapped)" };
var channels = new Option<int>("--channels") { Description = "Parallel channels (HTTP/2 connections)", DefaultValueFactory = _ => 2 };
var compress = new Option<string>("--compress") { Description = "none | lz4", DefaultValueFactory = _ => "none" };
var dirtyLog = new Option<string>("--dirty-log") { Description = "eager | manual", DefaultValueFactory = _ => "eager" };
var poison = new Option<string>("--poison") { Description = "Page poisoning byte (e.g. 0xaa) or off", DefaultValueFactory = _ => "off" };
var seed = new Option<ulong>("--seed") { Description = "Workload seed", DefaultValueFactory = _ => 1 };
var report = new Option<string?>("--report") { Description = "Write the JSON report to FILE" };
var maxRounds = new Option<int>("--max-rounds") { Description = "Fail as not converging after this many rounds", DefaultValueFactory = _ => 30 };
var timeout = new Option<double>("--timeout-seconds") { Description = "Fail if precopy takes longer", DefaultValueFactory = _ => 300 };
var abMib = new Option<int>("--ab-mib") { Description = "ab: MiB incremented at 1 MiB", DefaultValueFactory = _ => 64 };
var busyRate = new Option<string>("--busy-dirty-rate") { Description = "busy: page writes per second over all vCPUs, as a rate (e.g. 100MiB/s)", DefaultValueFactory = _ => "100MiB/s" };
var busySet = new Option<double>("--busy-working-set") { Description = "busy: share of RAM allocated", DefaultValueFactory = _ => 0.25 };
var busyStale = new Option<double>("--busy-stale-share") { Description = "busy: share of RAM earlier jobs filled and freed before the load (stale free memory)", DefaultValueFactory = _ => 0 };
var busyHot = new Option<double>("--busy-hot-set") { Description = "busy: share of the working set that takes 90% of the writes", DefaultValueFactory = _ => 0.1 };
var memhogShare = new Option<double>("--memhog-share") { Description = "memhog: share of RAM filled then freed", DefaultValueFactory = _ => 0.9 };
var hints = new Option<string>("--hints") { Description = "Free page hinting: on | off", DefaultValueFactory = _ => "on" };
var waitOnAck = new Option<string>("--wait-on-ack") { Description = "Guest driver waits for the device before reusing a hinted block: on | off", DefaultValueFactory = _ => "on" };
var allowUnsafe = new Option<bool>("--allow-unsafe") { Description = "Permit manual dirty-log mode with hints and wait-on-ack off (can lose writes; for demonstrations)" };
var pageCache = new Option<double>("--page-cache-share") { Description = "idle, memhog: share of RAM the kernel and page cache keep in use", DefaultValueFactory = _ => 0.05 };
var idleRate = new Option<double>("--idle-dirty-pages") { Description = "idle: pages written per second", DefaultValueFactory = _ => 64 };

var migrate = new Command("migrate", "Boot a guest and migrate it to a running target.")
{
    target, ram, vcpus, workload, warmup, downtime, bandwidth, channels, compress, dirtyLog, poison, seed, report, maxRounds, timeout,
    abMib, busyRate, busySet, busyStale, busyHot, memhogShare, pageCache, idleRate, hints, waitOnAck, allowUnsafe,
};
migrate.SetAction(async (parse, ct) =>
{
    (GuestConfig Guest, MigrationOptions Options) settings;
    try
    {
        var kind = Enum.Parse<WorkloadKind>(parse.GetValue(workload)!, ignoreCase: true);
        var guest = new GuestConfig
        {
            RamBytes = Units.ParseBytes(parse.GetValue(ram)!),
            Vcpus = parse.GetValue(vcpus),
            DirtyLogMode = ParseChoice<DirtyLogMode>(parse.GetValue(dirtyLog)!, "--dirty-log"),
            WaitOnAck = ParseSwitch(parse.GetValue(waitOnAck)!, "--wait-on-ack"),
            PoisonValue = ParsePoison(parse.GetValue(poison)!),
            Workload = new WorkloadOptions
            {
                Kind = kind,
                Seed = parse.GetValue(seed),
                AbMib = parse.GetValue(abMib),
                BusyDirtyPagesPerSecond = Units.ParseRate(parse.GetValue(busyRate)!) / PageGeometry.PageSize,
                BusyWorkingSetShare = parse.GetValue(busySet),
                BusyStaleShare = parse.GetValue(busyStale),
                BusyHotSetShare = parse.GetValue(busyHot),
                MemhogShare = parse.GetValue(memhogShare),
                IdleDirtyPagesPerSecond = parse.GetValue(idleRate),
                PageCacheShare = parse.GetValue(pageCache),
            },
        };
        guest.Validate();
        string? bw = parse.GetValue(bandwidth);
        string comp = parse.GetValue(compress)!;
        if (comp is not ("none" or "lz4"))
        {
            throw new ArgumentException($"--compress must be none or lz4, got '{comp}'.");
        }

        if (!Uri.TryCreate(parse.GetValue(target), UriKind.Absolute, out var uri))
        {
            throw new ArgumentException($"--target '{parse.GetValue(target)}' is not a URL.");
        }

        if (parse.GetValue(warmup) < 0 || parse.GetValue(timeout) <= 0)
        {
            throw new ArgumentException("--warmup-seconds must be >= 0 and --timeout-seconds > 0.");
        }

        var options = new MigrationOptions
        {
            Target = uri,
            DowntimeLimit = TimeSpan.FromMilliseconds(parse.GetValue(downtime)),
            MaxBandwidthBytesPerSecond = bw is null ? null : Units.ParseRate(bw),
            Channels = parse.GetValue(channels),
            Compress = comp == "lz4",
            MaxRounds = parse.GetValue(maxRounds),
            Timeout = TimeSpan.FromSeconds(parse.GetValue(timeout)),
            Hints = ParseSwitch(parse.GetValue(hints)!, "--hints"),
            AllowUnsafe = parse.GetValue(allowUnsafe),
        };
        options.Validate();
        options.ValidateFor(guest);
        settings = (guest, options);
    }
    catch (Exception ex) when (ex is ArgumentException or FormatException or OverflowException)
    {
        Console.Error.WriteLine($"error: {ex.Message}");
        Console.Error.WriteLine("usage: migrate --target URL --ram SIZE --vcpus N --workload NAME [options]; see --help");
        return 2;
    }

    var result = await MigrationRunner.RunAsync(settings.Guest, settings.Options, TimeSpan.FromSeconds(parse.GetValue(warmup)), Console.Out, ct);
    MigrationRunner.PrintSummary(result, Console.Out);
    if (parse.GetValue(report) is string path)
    {
        await File.WriteAllTextAsync(path, result.ToJson(), CancellationToken.None);
    }

    return result.Status == "completed" && result.Verified ? 0 : 1;
});

var demo = new Command("demo", "Self-contained demo: start a target on a free loopback port, boot a 1 GiB guest (memhog, then idle), migrate, verify, summarise.");
demo.SetAction(async (parse, ct) =>
{
    string targetReport = Path.Combine(Path.GetTempPath(), $"migration-demo-target-{Environment.ProcessId}.json");
    Console.WriteLine("demo: starting a target process on a free loopback port");
    await using var child = await TargetProcess.StartAsync(["--once", "--run-after", "1", "--report", targetReport, "--prealloc", "1GiB"], TimeSpan.FromSeconds(60), ct);
    Console.WriteLine($"demo: target listening on {child.Address}");
    var guest = new GuestConfig
    {
        RamBytes = 1L << 30,
        Vcpus = 2,
        Workload = new WorkloadOptions { Kind = WorkloadKind.Memhog, Seed = 1 },
    };
    var options = new MigrationOptions { Target = child.Address, Channels = 2 };
    var result = await MigrationRunner.RunAsync(guest, options, TimeSpan.FromSeconds(1), Console.Out, ct);
    MigrationRunner.PrintSummary(result, Console.Out);
    if (result.Status == "completed")
    {
        Console.WriteLine("demo: the target runs the guest for 1 s, then stops it and runs its self-check:");
        int code = await child.WaitForExitAsync(TimeSpan.FromSeconds(60));
        foreach (string line in child.Output.Where(l => l.StartsWith("run-after:", StringComparison.Ordinal)))
        {
            Console.WriteLine("  target " + line);
        }

        Console.WriteLine($"demo: target exited with code {code}");
    }

    File.Delete(targetReport);
    return result.Status == "completed" && result.Verified ? 0 : 1;
});

var quick = new Option<bool>("--quick") { Description = "1 GiB guests instead of 8 GiB: a smoke check in a few minutes" };
var outDir = new Option<string>("--out") { Description = "Directory for results.json, results.md, charts and run logs", DefaultValueFactory = _ => "bench-results" };
var repeat = new Option<int?>("--repeat") { Description = "Runs per scenario, link and hints setting (default 3; 1 with --quick)" };
var only = new Option<string[]>("--only") { Description = "Run only these scenarios (e.g. idle-8g stale-8g raw); default all", AllowMultipleArgumentsPerToken = true };
var bench = new Command("bench", "Benchmark hints off against on (idle, stale, busy guests; 10 Gbit/s and uncapped) and the raw page stream against iperf3, on loopback.")
{
    quick, outDir, repeat, only,
};
bench.SetAction(async (parse, ct) =>
{
    bool isQuick = parse.GetValue(quick);
    int repeats = parse.GetValue(repeat) ?? (isQuick ? 1 : 3);
    string[]? names = parse.GetValue(only) is { Length: > 0 } o ? o : null;
    var known = Migration.Source.Bench.BenchScenario.All(isQuick).Select(x => x.Name).Append("raw").ToList();
    if (repeats is < 1 or > 50 || names?.FirstOrDefault(n => !known.Contains(n)) is string unknown && unknown.Length > 0)
    {
        Console.Error.WriteLine($"error: --repeat must be 1..50 and --only takes {string.Join(", ", known)}");
        return 2;
    }

    var runner = new Migration.Source.Bench.BenchRunner(new(isQuick, parse.GetValue(outDir)!, repeats, names), Console.Out);
    return await runner.RunAsync(ct);
});

var root = new RootCommand("Live-migration source: hosts a simulated VM and migrates it over gRPC.") { migrate, demo, bench };
return await root.Parse(args).InvokeAsync();

static T ParseChoice<T>(string value, string option)
    where T : struct, Enum =>
    Enum.TryParse<T>(value, ignoreCase: true, out var parsed) && Enum.IsDefined(parsed)
        ? parsed
        : throw new ArgumentException($"{option} must be one of {string.Join(", ", Enum.GetNames<T>().Select(n => n.ToLowerInvariant()))}; got '{value}'.");

static bool ParseSwitch(string value, string option) => value.ToLowerInvariant() switch
{
    "on" => true,
    "off" => false,
    _ => throw new ArgumentException($"{option} must be on or off; got '{value}'."),
};

static byte? ParsePoison(string value)
{
    if (value.Equals("off", StringComparison.OrdinalIgnoreCase))
    {
        return null;
    }

    string digits = value.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? value[2..] : value;
    var style = value.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? System.Globalization.NumberStyles.HexNumber : System.Globalization.NumberStyles.Integer;
    return byte.TryParse(digits, style, System.Globalization.CultureInfo.InvariantCulture, out byte b)
        ? b
        : throw new ArgumentException($"--poison must be a byte (0..255 or 0x00..0xff) or off; got '{value}'.");
}
