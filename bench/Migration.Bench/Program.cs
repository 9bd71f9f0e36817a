using System.CommandLine;
using Migration.Bench;
using Migration.Bench.Floor;

// The macro benchmark: hints off against on (idle, stale, busy guests; 10 Gbit/s and uncapped), the raw page
// stream against iperf3 (cleartext and mutual TLS), the soak, and QEMU side by side (--peer qemu), on loopback.
// Exit codes: 0 every run verified, 1 a run failed, 2 bad usage.
var quick = new Option<bool>("--quick")
{
    Description = "1 GiB guests instead of 8 GiB: a smoke check in a few minutes",
};
var outDir = new Option<string>("--out")
{
    Description = "Directory for results.json, results.md, charts and run logs",
    DefaultValueFactory = _ => "bench-results",
};
var repeat = new Option<int?>("--repeat")
{
    Description = "Runs per scenario, link and hints setting (default 3; 1 with --quick)",
};
var only = new Option<string[]>("--only")
{
    Description = "Run only these scenarios (e.g. idle-8g stale-8g raw scale balloon compare; with --peer: " +
        "peer-random peer-idle peer-stale); default all but compare (hinting against reporting against ballooning), " +
        "reporting-cost, downtime (whether the downtime limit holds, the machine quiet and busy) and converge (busy " +
        "guests at 0.5-4x the link with each convergence method)",
    AllowMultipleArgumentsPerToken = true,
};
var soakMigrations = new Option<int?>("--soak-migrations")
{
    Description = "Migrations in the soak (one long-lived target); default 100, 30 with --quick",
};
var peer = new Option<string?>("--peer")
{
    Description = "Run QEMU's migration side by side with ours on the same work (random RAM at 1, 2, 4 channels, " +
        "with the .NET socket floor as a third engine; " +
        "an idle guest; stale memory hinted and not, QEMU on a real Linux guest), interleaved; installs " +
        "qemu-system-x86 (and Debian's kernel and busybox for the Linux guest) when missing and allowed. Alone it " +
        "runs only this",
};
peer.AcceptOnlyFromAmong("qemu");
var convergeLink = new Option<string[]>("--converge-link")
{
    Description = "converge-qemu: emulated links in Gbit/s (QEMU's max-bandwidth), e.g. 1g 10g; default 1g",
    AllowMultipleArgumentsPerToken = true,
};
var convergeRate = new Option<string[]>("--converge-rate")
{
    Description = "converge-qemu: the busy guest's dirty rates, as times the link (0.5x 1x 2x 4x) or MB/s (62.5; " +
        "0 = as fast as it can); default 2x",
    AllowMultipleArgumentsPerToken = true,
};
var convergeAuto = new Option<string[]>("--converge-auto")
{
    Description = "converge-qemu: auto-converge off, on or both (default off on)",
    AllowMultipleArgumentsPerToken = true,
};
var convergeWs = new Option<int?>("--converge-ws")
{
    Description = "converge-qemu: the guest's working set in MiB (default 256 per Gbit/s of the link; the guest " +
        "has 256 MiB more, at least 512)",
};
var convergeTimeout = new Option<int?>("--converge-timeout")
{
    Description = "converge-qemu: seconds before a migration is cancelled as not completing (default 90)",
};
var qemuChoice = new Option<string?>("--qemu")
{
    Description = "With --peer qemu or converge-qemu: the qemu-system-x86_64 to run (a path), or 'backports' for the " +
        "one of this Debian release's backports, downloaded into the output directory and not installed; default " +
        "the machine's (QEMU before 9.0 loses dirty pages of a busy guest under TCG)",
};
var floorRam = new Option<string?>("--floor-ram")
{
    Description = "floor: guest RAM each transfer and migration moves (default 1GiB with --quick, else 4GiB)",
};
var render = new Option<string?>("--render")
{
    Description = "Run nothing: rebuild results.md and the charts from DIR/results.json",
};
var root = new RootCommand(
    "Benchmark hints off against on (idle, stale, busy guests; 10 Gbit/s and uncapped) " +
    "the raw page stream against iperf3 (cleartext and mutual TLS), and a soak of back-to-back migrations into one " +
    "target, on loopback.")
{
    quick, outDir, repeat, only, soakMigrations, peer, convergeLink, convergeRate, convergeAuto, convergeWs,
    convergeTimeout, qemuChoice, floorRam, render,
};
root.Subcommands.Add(FloorCommands.Receive());
root.Subcommands.Add(FloorCommands.Send());
root.SetAction(async (parse, ct) =>
{
    if (parse.GetValue(render) is string renderDir)
    {
        return await BenchRunner.RenderAsync(renderDir, Console.Out, ct);
    }

    bool isQuick = parse.GetValue(quick);
    int repeats = parse.GetValue(repeat) ?? (isQuick ? 1 : 3);
    string[]? names = parse.GetValue(only) is { Length: > 0 } o ? o : null;
    int soak = parse.GetValue(soakMigrations) ?? (isQuick ? 30 : 100);
    var known = BenchScenario.All(isQuick).Select(x => x.Name)
        .Concat(["raw", "scale", "soak", "balloon", "compare", "reporting-cost", "downtime", "converge",
            "converge-qemu", "floor"])
        .Concat(BenchOptions.PeerParts).ToList();
    if (repeats is < 1 or > 50 || soak is < 10 or > 10000
        || names?.FirstOrDefault(n => !known.Contains(n)) is { Length: > 0 })
    {
        Console.Error.WriteLine("error: --repeat must be 1..50, --soak-migrations 10..10000, and --only takes " +
            string.Join(", ", known));
        return 2;
    }

    if (parse.GetValue(peer) is null && names?.FirstOrDefault(BenchOptions.PeerParts.Contains) is string part)
    {
        Console.Error.WriteLine($"error: --only {part} is a part of the QEMU comparison: add --peer qemu");
        return 2;
    }

    var (converge, convergeError) = ConvergeQemuOptions.Parse(parse.GetValue(convergeLink),
        parse.GetValue(convergeRate), parse.GetValue(convergeAuto), parse.GetValue(convergeWs),
        parse.GetValue(convergeTimeout));
    if (convergeError is not null)
    {
        Console.Error.WriteLine($"error: {convergeError}");
        return 2;
    }

    var (floorBytes, floorError) = FloorCommands.ParseRam(parse.GetValue(floorRam));
    if (floorError is not null)
    {
        Console.Error.WriteLine($"error: {floorError}");
        return 2;
    }

    var runner = new BenchRunner(new BenchOptions(isQuick, parse.GetValue(outDir)!, repeats, names, soak,
        parse.GetValue(peer), converge, parse.GetValue(qemuChoice), floorBytes),
        Console.Out);
    return await runner.RunAsync(ct);
});

var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    foreach (var error in parsed.Errors)
    {
        Console.Error.WriteLine($"error: {error.Message}");
    }

    return 2;
}

return await parsed.InvokeAsync();
