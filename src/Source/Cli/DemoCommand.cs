using System.CommandLine;
using Microsoft.Extensions.Logging;
using Migration.Shared.Cli;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;

namespace Migration.Source.Cli;

/// <summary>
/// <c>demo</c>: the main job, self-contained. Starts a target process on a free loopback port, boots a 1 GiB guest
/// (memhog fills 90% of RAM and frees it, then idles), migrates it with free page hinting, lets the target run the
/// guest for a second and self-check it, and prints a summary.
/// </summary>
internal static class DemoCommand
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    public static Command Create()
    {
        var command = new Command("demo",
            "Self-contained demo: start a target on a free loopback port, boot a 1 GiB guest (memhog, then idle), " +
            "migrate, verify, summarise.");
        command.SetAction(RunAsync);
        return command;
    }

    private static async Task<int> RunAsync(ParseResult parse, CancellationToken unused)
    {
        var ct = ShutdownSignals.Token;
        ShutdownSignals.WarnIfInterruptIgnored(Console.Error);
        var guest = new GuestConfig
        {
            RamBytes = 1L << 30,
            Workload = new WorkloadOptions { Kind = WorkloadKind.Memhog },
        };
        string targetReport = Path.Combine(Path.GetTempPath(), $"migration-demo-target-{Environment.ProcessId}.json");
        Console.WriteLine("demo: starting a target process on a free loopback port");
        string[] args = ["--once", "--run-after", "1", "--report", targetReport, "--prealloc", ByteSizeOf(guest)];
        await using var child = await TargetProcess.StartAsync(args, StartTimeout, ct).ConfigureAwait(false);
        Console.WriteLine($"demo: target listening on {child.Address}");
        var options = MigrationOptions.Defaults with { Target = child.Address };
        using var logging = ConsoleLogging.Create(LogLevel.Warning);
        var result = await MigrationRunner
            .RunAsync(guest, options, MigrationRunner.DefaultWarmup, Console.Out, logging, ct)
            .ConfigureAwait(false);
        MigrationRunner.PrintSummary(result, Console.Out);
        if (result.Status == MigrationStatus.Completed)
        {
            Console.WriteLine("demo: the target runs the guest for 1 s, then stops it and runs its self-check:");
            int code = await child.WaitForExitAsync(StartTimeout).ConfigureAwait(false);
            foreach (string line in child.Output.Where(l => l.StartsWith("run-after:", StringComparison.Ordinal)))
            {
                Console.WriteLine("  target " + line);
            }

            Console.WriteLine($"demo: target exited with code {code}");
        }

        File.Delete(targetReport);
        return result is { Status: MigrationStatus.Completed, Verified: true }
            ? CommandLine.Completed
            : CommandLine.Failed;
    }

    private static string ByteSizeOf(GuestConfig guest) => new ByteSize(guest.RamBytes).ToString();
}
