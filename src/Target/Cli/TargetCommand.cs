using System.CommandLine;
using Migration.Shared.Cli;
using Migration.Shared.Guest;
using Migration.Target.Hosting;

namespace Migration.Target.Cli;

/// <summary>The target's command line; defaults come from <see cref="TargetOptions.Defaults"/>.</summary>
internal static class TargetCommand
{
    public static RootCommand Create()
    {
        var defaults = TargetOptions.Defaults;
        var listen = new Option<string>("--listen")
        {
            Description = "URL to listen on (http://HOST:PORT; port 0 picks a free one)",
            DefaultValueFactory = _ => defaults.Listen,
        };
        var once = new Option<bool>("--once") { Description = "Exit after the first migration ends" };
        var report = new Option<string?>("--report") { Description = "Write a JSON report of the migration to FILE" };
        var dumpRam = new Option<string?>("--dump-ram")
        {
            Description = "Write the received RAM image to FILE at switchover, before the vCPUs resume",
        };
        var runAfter = new Option<double?>("--run-after")
        {
            Description = "Let the resumed guest run SECONDS (0..86400), then stop it and run its self-check",
            CustomParser = result =>
            {
                string text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : string.Empty;
                if (double.TryParse(text, System.Globalization.NumberStyles.Float,
                    System.Globalization.CultureInfo.InvariantCulture, out double seconds)
                    && double.IsFinite(seconds) && seconds is >= 0 and <= 86400)
                {
                    return seconds;
                }

                result.AddError($"--run-after must be a number of seconds from 0 to 86400; got '{text}'.");
                return null;
            },
        };
        var prealloc = new Option<string?>("--prealloc")
        {
            Description = "Map and back this much guest RAM (e.g. 8GiB) before listening, like QEMU's -mem-prealloc; " +
                "used by a migration of exactly that size",
        };
        var verify = CliOptions.Choice("--verify",
            "Switchover digests: taken as pages arrive (incremental) or a rehash of all in-use RAM (full)",
            defaults.Verify);
        var root = new RootCommand("Live-migration target: receives a guest over gRPC, verifies it and resumes it.")
        {
            listen, once, report, dumpRam, runAfter, prealloc, verify,
        };
        root.SetAction(parse =>
        {
            string url = parse.GetValue(listen)!;
            if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme != Uri.UriSchemeHttp)
            {
                return UsageErrors.Report($"--listen must be an http:// URL with host and port, got '{url}'");
            }

            long? preallocBytes = null;
            if (parse.GetValue(prealloc) is string size)
            {
                try
                {
                    preallocBytes = Shared.Units.ParseBytes(size);
                    PageGeometry.ValidateRamBytes(preallocBytes.Value);
                }
                catch (Exception ex) when (ex is FormatException or ArgumentException or OverflowException)
                {
                    return UsageErrors.Report($"--prealloc: {ex.Message}");
                }
            }

            var options = defaults with
            {
                Verify = parse.GetValue(verify),
                PreallocBytes = preallocBytes,
                Listen = url,
                Once = parse.GetValue(once),
                ReportPath = parse.GetValue(report),
                DumpRamPath = parse.GetValue(dumpRam),
                RunAfterSeconds = parse.GetValue(runAfter),
            };
            return TargetServer.Run(options);
        });
        return root;
    }
}
