using System.CommandLine;
using Microsoft.Extensions.Logging;
using Migration.Shared.Cli;
using Migration.Shared.Precopy;

namespace Migration.Source.Cli;

/// <summary><c>migrate</c>: boot a guest here and migrate it to a running target.</summary>
internal static class MigrateCommand
{
    private static readonly MigrationOptions Defaults = MigrationOptions.Defaults;

    public static Command Create()
    {
        var guest = new GuestOptions();
        var convergence = new ConvergenceOptions();
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
        var deltaCache = CliOptions.WholeNumber("--delta-cache-mib",
            "Delta pages (XBZRLE): MiB of the cache of sent pages, e.g. 256; a page sent again goes as a delta " +
            "against its cached copy when that is smaller (0: off)", (int)(Defaults.DeltaCacheBytes >> 20), 0,
            (int)(Shared.Transport.DeltaPageCache.MaxBytes >> 20));
        var maxRounds = CliOptions.WholeNumber("--max-rounds", "Fail as not converging after this many rounds",
            Defaults.MaxRounds, 1, 1_000_000);
        var timeout = CliOptions.Number("--timeout-seconds", "Fail if precopy takes longer",
            Defaults.Timeout.TotalSeconds, 1e-3, 86400 * 7);
        var hints = CliOptions.Switch("--hints", "Free page hinting", Defaults.Hints);
        var skipBallooned = CliOptions.Switch("--skip-ballooned",
            "Neither scan nor send ballooned pages (off: send them as zero pages, as QEMU does)",
            Defaults.SkipBallooned);
        var awaitReporting = CliOptions.Number("--await-reporting",
            "With --balloon-reporting on: wait up to this many seconds after the warm-up until the guest has " +
            "reported its free memory (0: migrate at once)", 0, 0, 3600);
        var skipDiscarded = CliOptions.Switch("--skip-discarded",
            "Neither scan nor send pages free page reporting discarded (off: send them as zero pages, as QEMU does)",
            Defaults.SkipDiscarded);
        var resumeFirst = CliOptions.Switch("--resume-first",
            "Resume on the target before comparing page digests (outputs held until they match)", Defaults.ResumeFirst);
        var allowUnsafe = new Option<bool>("--allow-unsafe")
        {
            Description = "Permit manual dirty-log mode with hints and wait-on-ack off " +
                "(can lose writes; for demonstrations)",
        };
        var report = new Option<string?>("--report") { Description = "Write the JSON report to FILE" };
        var completeTimeout = CliOptions.Number("--complete-timeout",
            "Seconds to wait for the target's answer to Complete", Defaults.CompleteTimeout.TotalSeconds, 0.01, 86400);
        var handoverWindow = CliOptions.Number("--handover-window",
            "Seconds to keep asking the target what it decided when its Complete answer is lost",
            Defaults.HandoverWindow.TotalSeconds, 0.01, 86400);
        var stallTimeout = CliOptions.Number("--stall-timeout",
            "Seconds without progress after which a connection counts as stalled", Defaults.StallTimeout.TotalSeconds,
            0.01, 86400);
        var security = new SecurityOptions("target");
        var balloon = CliOptions.Size("--balloon",
            "Inflate the balloon to this size before migrating (e.g. 512MiB); its pages are neither scanned nor sent",
            0);
        var logLevel = CliOptions.Choice("--log-level", "Engine log messages on stderr (phases, convergence decisions)",
            LogLevel.Warning);

        var command = new Command("migrate", "Boot a guest and migrate it to a running target.")
        {
            target, warmup, downtime, bandwidth, channels, compress, deltaCache, maxRounds, timeout, hints,
            skipBallooned, skipDiscarded, awaitReporting, resumeFirst, allowUnsafe, report, balloon, logLevel,
            completeTimeout, handoverWindow, stallTimeout,
        };
        foreach (var option in guest.All.Concat(security.All).Concat(convergence.All))
        {
            command.Options.Add(option);
        }

        command.SetAction(async (parse, _) =>
        {
            Shared.Precopy.MigrationOptions options;
            Shared.Machine.GuestConfig config;
            long balloonPages;
            try
            {
                config = guest.Bind(parse);
                balloonPages = BalloonInflation.PagesFor(parse.GetValue(balloon).Bytes, config.RamBytes);
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
                    DeltaCacheBytes = (long)parse.GetValue(deltaCache) << 20,
                    MaxRounds = parse.GetValue(maxRounds),
                    Timeout = TimeSpan.FromSeconds(parse.GetValue(timeout)),
                    Hints = parse.GetValue(hints) == OnOff.On,
                    SkipBallooned = parse.GetValue(skipBallooned) == OnOff.On,
                    SkipDiscarded = parse.GetValue(skipDiscarded) == OnOff.On,
                    ResumeFirst = parse.GetValue(resumeFirst) == OnOff.On,
                    AllowUnsafe = parse.GetValue(allowUnsafe),
                    CompleteTimeout = TimeSpan.FromSeconds(parse.GetValue(completeTimeout)),
                    HandoverWindow = TimeSpan.FromSeconds(parse.GetValue(handoverWindow)),
                    StallTimeout = TimeSpan.FromSeconds(parse.GetValue(stallTimeout)),
                    Security = security.Bind(parse),
                };
                options = convergence.Bind(parse, options);
                options.Validate();
                options.ValidateFor(config);
                if (parse.GetValue(report) is string reportPath
                    && CliFiles.WritableProblem(reportPath, "--report") is { } problem)
                {
                    throw new ArgumentException(problem);
                }
            }
            catch (ArgumentException ex)
            {
                return UsageErrors.Report(ex.Message);
            }

            ShutdownSignals.WarnIfInterruptIgnored(Console.Error);
            using var logging = ConsoleLogging.Create(parse.GetValue(logLevel));
            var result = await MigrationRunner.RunAsync(config, options, TimeSpan.FromSeconds(parse.GetValue(warmup)),
                Console.Out, logging, ShutdownSignals.Token, balloonPages,
                TimeSpan.FromSeconds(parse.GetValue(awaitReporting))).ConfigureAwait(false);
            MigrationRunner.PrintSummary(result, Console.Out);
            if (parse.GetValue(report) is string path)
            {
                try
                {
                    await File.WriteAllTextAsync(path, result.ToJson(), CancellationToken.None).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    // The exit code tells where the guest runs; a lost report must not say otherwise.
                    await Console.Error.WriteLineAsync($"warning: the report was not written to {path}: {ex.Message}")
                        .ConfigureAwait(false);
                }
            }

            return CommandLine.ExitCodeOf(result);
        });
        return command;
    }
}
