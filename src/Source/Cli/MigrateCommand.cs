using System.CommandLine;
using Microsoft.Extensions.Logging;
using Migration.Shared.Cli;
using Migration.Shared.Reporting;
using Migration.Source.Precopy;

namespace Migration.Source.Cli;

/// <summary><c>migrate</c>: boot a guest here and migrate it to a running target.</summary>
internal static class MigrateCommand
{
    private static readonly MigrationOptions Defaults = MigrationOptions.Defaults;

    public static Command Create()
    {
        var guest = new GuestOptions();
        var target = new Option<string>("--target")
        {
            Description = "Target URL, e.g. http://127.0.0.1:50051",
            Required = true,
        };
        var warmup = CliOptions.Number("--warmup-seconds",
            "Let the workload run this long (and until it settles) before migrating",
            MigrationRunner.DefaultWarmup.TotalSeconds, 0, 86400);
        var downtime = CliOptions.Number("--downtime-ms", "Downtime limit", Defaults.DowntimeLimit.TotalMilliseconds,
            1e-3, 3.6e6);
        var bandwidth = CliOptions.Rate("--max-bandwidth", "Cap, e.g. 10Gbit or 500MB/s (default uncapped)",
            Defaults.MaxBandwidthBytesPerSecond);
        var channels = CliOptions.WholeNumber("--channels", "Parallel channels (HTTP/2 connections)", Defaults.Channels,
            1, 64);
        var compress = CliOptions.Choice("--compress", "Page compression", Defaults.Compression);
        var maxRounds = CliOptions.WholeNumber("--max-rounds", "Fail as not converging after this many rounds",
            Defaults.MaxRounds, 1, 1_000_000);
        var timeout = CliOptions.Number("--timeout-seconds", "Fail if precopy takes longer",
            Defaults.Timeout.TotalSeconds, 1e-3, 86400 * 7);
        var hints = CliOptions.Switch("--hints", "Free page hinting", Defaults.Hints);
        var allowUnsafe = new Option<bool>("--allow-unsafe")
        {
            Description = "Permit manual dirty-log mode with hints and wait-on-ack off " +
                "(can lose writes; for demonstrations)",
        };
        var report = new Option<string?>("--report") { Description = "Write the JSON report to FILE" };
        var logLevel = CliOptions.Choice("--log-level", "Engine log messages on stderr (phases, convergence decisions)",
            LogLevel.Warning);

        var command = new Command("migrate", "Boot a guest and migrate it to a running target.")
        {
            target, warmup, downtime, bandwidth, channels, compress, maxRounds, timeout, hints, allowUnsafe, report,
            logLevel,
        };
        foreach (var option in guest.All)
        {
            command.Options.Add(option);
        }

        command.SetAction(async (parse, ct) =>
        {
            Precopy.MigrationOptions options;
            Shared.Guest.GuestConfig config;
            try
            {
                config = guest.Bind(parse);
                if (!Uri.TryCreate(parse.GetValue(target), UriKind.Absolute, out var uri))
                {
                    throw new ArgumentException($"--target '{parse.GetValue(target)}' is not a URL.");
                }

                options = Defaults with
                {
                    Target = uri,
                    DowntimeLimit = TimeSpan.FromMilliseconds(parse.GetValue(downtime)),
                    MaxBandwidthBytesPerSecond = parse.GetValue(bandwidth)?.BytesPerSecond,
                    Channels = parse.GetValue(channels),
                    Compression = parse.GetValue(compress),
                    MaxRounds = parse.GetValue(maxRounds),
                    Timeout = TimeSpan.FromSeconds(parse.GetValue(timeout)),
                    Hints = parse.GetValue(hints) == OnOff.On,
                    AllowUnsafe = parse.GetValue(allowUnsafe),
                };
                options.Validate();
                options.ValidateFor(config);
            }
            catch (ArgumentException ex)
            {
                return UsageErrors.Report(ex.Message);
            }

            using var logging = ConsoleLogging.Create(parse.GetValue(logLevel));
            var result = await MigrationRunner.RunAsync(config, options, TimeSpan.FromSeconds(parse.GetValue(warmup)),
                Console.Out, logging, ct).ConfigureAwait(false);
            MigrationRunner.PrintSummary(result, Console.Out);
            if (parse.GetValue(report) is string path)
            {
                await File.WriteAllTextAsync(path, result.ToJson(), CancellationToken.None).ConfigureAwait(false);
            }

            return result is { Status: MigrationStatus.Completed, Verified: true }
                ? CommandLine.Completed
                : CommandLine.Failed;
        });
        return command;
    }
}
