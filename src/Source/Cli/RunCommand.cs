using System.CommandLine;
using Microsoft.Extensions.Logging;
using Migration.Shared.Cli;
using Migration.Shared.Hosting;
using Migration.Shared.Machine;
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
            Description = "Management API address, http(s)://HOST:PORT (port 0: a free port; the addresses bound are " +
                "printed at start)",
            DefaultValueFactory = _ => DefaultListen,
        };
        var balloon = CliOptions.Size("--balloon", "Inflate the balloon to this size once the guest runs (e.g. 512MiB)",
            0);
        var logLevel = CliOptions.Choice("--log-level", "Engine log messages on stderr", LogLevel.Warning);
        var security = new SecurityOptions("target", allowTargets: true);
        var apiToken = new Option<string?>("--api-token-file")
        {
            Description = "Require this shared token (the file's content) from every caller of the management API",
        };
        var apiCert = new Option<string?>("--api-tls-cert") { Description = "The API's certificate (PEM), https://" };
        var apiKey = new Option<string?>("--api-tls-key") { Description = "The API certificate's private key (PEM)" };
        var apiClientCa = new Option<string?>("--api-tls-client-ca")
        {
            Description = "Mutual TLS: accept only API callers whose certificate this CA (PEM) issued",
        };
        var command = new Command("run",
            "Boot a guest and keep it running, serving the management API until interrupted.")
        {
            listen, balloon, logLevel, apiToken, apiCert, apiKey, apiClientCa,
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
            ServerSecurity api;
            try
            {
                config = guest.Bind(parse);
                balloonPages = BalloonInflation.PagesFor(parse.GetValue(balloon).Bytes, config.RamBytes);
                string url = parse.GetValue(listen)!;
                var listenUrl = ListenUrl.Parse(url, listen.Name);
                api = new ServerSecurity
                {
                    Listen = url,
                    Token = parse.GetValue(apiToken) is string file ? CliFiles.ReadToken(file, apiToken.Name) : null,
                    TlsCertificatePath = Readable(parse, apiCert),
                    TlsKeyPath = Readable(parse, apiKey),
                    TlsClientCaPath = Readable(parse, apiClientCa),
                    Name = "this VM's management API",
                    FlagPrefix = "--api-",
                };
                if (api.Problem() is { } problem)
                {
                    throw new ArgumentException($"--listen {listenUrl}: {problem}.");
                }

                migrations = MigrationOptions.Defaults with { Security = security.Bind(parse) };
            }
            catch (ArgumentException ex)
            {
                return UsageErrors.Report(ex.Message);
            }

            return await RunAsync(config, api, balloonPages, migrations, parse.GetValue(logLevel))
                .ConfigureAwait(false);
        });
        return command;
    }

    private static string? Readable(ParseResult parse, Option<string?> option) =>
        parse.GetValue(option) is string path ? CliFiles.Readable(path, option.Name) : null;

    private static async Task<int> RunAsync(GuestConfig config, ServerSecurity api, long balloonPages,
        MigrationOptions migrations, LogLevel level)
    {
        var ct = ShutdownSignals.Token;
        ShutdownSignals.WarnIfInterruptIgnored(Console.Error);
        using var logging = ConsoleLogging.Create(level);
        Console.WriteLine($"source: booting a {config.RamBytes >> 20} MiB guest, {config.Vcpus} vCPUs, " +
            $"workload {config.Workload.Kind.ToString().ToLowerInvariant()}, seed {config.Workload.Seed}");
        var vm = VirtualMachine.Boot(config);
        vm.Start();
        SwitchoverWarmup.Run();
        using var host = new SourceHost(vm, migrations, logging, Console.Out);
        Microsoft.AspNetCore.Builder.WebApplication app;
        IReadOnlyList<string> addresses;
        try
        {
            (app, addresses) = await ManagementServer.StartAsync(api, host, ct).ConfigureAwait(false);
        }
        catch (IOException ex)
        {
            vm.Dispose();
            await Console.Error.WriteLineAsync($"error: cannot listen on {api.Listen}: {ex.Message}")
                .ConfigureAwait(false);
            return CommandLine.Failed;
        }

        await using (app.ConfigureAwait(false))
        {
            // the line tests and scripts wait for
            Console.WriteLine($"source: management API listening on {string.Join(' ', addresses)}");
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
