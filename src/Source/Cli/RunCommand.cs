using System.CommandLine;
using Microsoft.Extensions.Logging;
using Migration.Shared.Cli;
using Migration.Shared.Guest;
using Migration.Shared.Hosting;
using Migration.Shared.Precopy;
using Migration.Source.Management;

namespace Migration.Source.Cli;

/// <summary>
/// <c>run</c>: boot a guest and keep it running, serving the management API (balloon, events, migrations) until
/// interrupted. <c>ctl</c> is its client.
/// </summary>
internal static class RunCommand
{
    public const string DefaultListen = "http://127.0.0.1:50052";

    public static Command Create()
    {
        var guest = new GuestOptions();
        var listen = new Option<string>("--listen")
        {
            Description = "Management API address (port 0: a free port, printed at start)",
            DefaultValueFactory = _ => DefaultListen,
        };
        var balloon = CliOptions.Size("--balloon", "Inflate the balloon to this size once the guest runs (e.g. 512MiB)",
            0);
        var logLevel = CliOptions.Choice("--log-level", "Engine log messages on stderr", LogLevel.Warning);
        var security = new SecurityOptions("target");
        var command = new Command("run",
            "Boot a guest and keep it running, serving the management API until interrupted.")
        {
            listen, balloon, logLevel,
        };
        foreach (var option in guest.All.Concat(security.All))
        {
            command.Options.Add(option);
        }

        command.SetAction(async (parse, _) =>
        {
            GuestConfig config;
            long balloonPages;
            MigrationOptions migrations;
            try
            {
                config = guest.Bind(parse);
                balloonPages = BalloonInflation.PagesFor(parse.GetValue(balloon).Bytes, config.RamBytes);
                if (!Uri.TryCreate(parse.GetValue(listen), UriKind.Absolute, out var uri) || uri.Scheme != "http")
                {
                    throw new ArgumentException($"--listen '{parse.GetValue(listen)}' is not an http:// URL.");
                }

                if (!Loopback.Is(uri))
                {
                    throw new ArgumentException($"--listen {uri}: the management API has no authentication of its " +
                        "own yet, so it listens on loopback only (127.0.0.1, [::1] or localhost).");
                }

                migrations = MigrationOptions.Defaults with { Security = security.Bind(parse) };
            }
            catch (ArgumentException ex)
            {
                return UsageErrors.Report(ex.Message);
            }

            return await RunAsync(config, parse.GetValue(listen)!, balloonPages, migrations, parse.GetValue(logLevel))
                .ConfigureAwait(false);
        });
        return command;
    }

    private static async Task<int> RunAsync(GuestConfig config, string listen, long balloonPages,
        MigrationOptions migrations, LogLevel level)
    {
        var ct = ShutdownSignals.Token;
        using var logging = ConsoleLogging.Create(level);
        Console.WriteLine($"source: booting a {config.RamBytes >> 20} MiB guest, {config.Vcpus} vCPUs, " +
            $"workload {config.Workload.Kind.ToString().ToLowerInvariant()}, seed {config.Workload.Seed}");
        var vm = VirtualMachine.Boot(config);
        vm.Start();
        SwitchoverWarmup.Run();
        using var host = new SourceHost(vm, migrations, logging, Console.Out);
        Microsoft.AspNetCore.Builder.WebApplication app;
        Uri address;
        try
        {
            (app, address) = await ManagementServer.StartAsync(listen, host, ct).ConfigureAwait(false);
        }
        catch (IOException ex)
        {
            vm.Dispose();
            await Console.Error.WriteLineAsync($"error: cannot listen on {listen}: {ex.Message}").ConfigureAwait(false);
            return CommandLine.Failed;
        }

        await using (app.ConfigureAwait(false))
        {
            // the line tests and scripts wait for
            Console.WriteLine($"source: management API listening on {address}");
            try
            {
                if (balloonPages > 0)
                {
                    await BalloonInflation.RunAsync(vm, balloonPages, Console.Out, ct).ConfigureAwait(false);
                }

                await Task.Delay(Timeout.Infinite, ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Console.WriteLine("source: stopping");
            }

            host.Dispose(); // cancels a migration in flight
            if (host.Migration is { } running)
            {
                await running.ConfigureAwait(false);
            }

            await app.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }

        vm.Dispose();
        return CommandLine.Completed;
    }
}
