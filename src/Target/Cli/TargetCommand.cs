using System.CommandLine;
using Migration.Shared.Cli;
using Migration.Shared.Guest;
using Migration.Shared.Hosting;
using Migration.Shared.Precopy;
using Migration.Shared.Transport;
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
            Description = "URL to listen on, http(s)://HOST:PORT (port 0 picks a free one; the addresses bound are " +
                "printed at start)",
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
        var lease = CliOptions.Number("--lease-seconds",
            "Discard a migration whose source does nothing for this long", defaults.Lease.TotalSeconds, 0.1, 86400);
        var tokenFile = new Option<string?>("--token-file")
        {
            Description = "Require this shared token (the file's content) from every caller",
        };
        var tlsCert = new Option<string?>("--tls-cert") { Description = "Server certificate (PEM) for https://" };
        var tlsKey = new Option<string?>("--tls-key") { Description = "Server certificate's private key (PEM)" };
        var tlsClientCa = new Option<string?>("--tls-client-ca")
        {
            Description = "Mutual TLS: accept only clients whose certificate this CA (PEM) issued",
        };
        var onward = new SecurityOptions("next target (a migration onward through the management API)",
            prefix: "onward-", allowTargets: true);
        var root = new RootCommand("Live-migration target: receives a guest over gRPC, verifies it and resumes it.")
        {
            listen, once, report, dumpRam, runAfter, prealloc, verify, lease, tokenFile, tlsCert, tlsKey, tlsClientCa,
        };
        foreach (var option in onward.All)
        {
            root.Options.Add(option);
        }

        root.SetAction(async (parse, _) =>
        {
            string url = parse.GetValue(listen)!;
            if (ListenUrl.Problem(url, listen.Name) is { } badUrl)
            {
                return UsageErrors.Report(badUrl);
            }

            var outputs = new[] { ("--report", parse.GetValue(report)), ("--dump-ram", parse.GetValue(dumpRam)) };
            foreach (var (option, path) in outputs)
            {
                if (path is not null && CliFiles.WritableProblem(path, option) is { } problem)
                {
                    return UsageErrors.Report(problem);
                }
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

            string? token;
            TransportSecurity onwardSecurity;
            try
            {
                onwardSecurity = onward.Bind(parse);
                token = parse.GetValue(tokenFile) is string file ? CliFiles.ReadToken(file, "--token-file") : null;
                foreach (var (option, path) in new[]
                {
                    ("--tls-cert", parse.GetValue(tlsCert)), ("--tls-key", parse.GetValue(tlsKey)),
                    ("--tls-client-ca", parse.GetValue(tlsClientCa)),
                })
                {
                    if (path is not null)
                    {
                        CliFiles.Readable(path, option);
                    }
                }
            }
            catch (ArgumentException ex)
            {
                return UsageErrors.Report(ex.Message);
            }

            var options = defaults with
            {
                Lease = TimeSpan.FromSeconds(parse.GetValue(lease)),
                Token = token,
                TlsCertificatePath = parse.GetValue(tlsCert),
                TlsKeyPath = parse.GetValue(tlsKey),
                TlsClientCaPath = parse.GetValue(tlsClientCa),
                Verify = parse.GetValue(verify),
                PreallocBytes = preallocBytes,
                Listen = url,
                Once = parse.GetValue(once),
                ReportPath = parse.GetValue(report),
                DumpRamPath = parse.GetValue(dumpRam),
                RunAfterSeconds = parse.GetValue(runAfter),
                Onward = MigrationOptions.Defaults with { Security = onwardSecurity },
            };
            if (options.Security.Problem() is { } unsafeSetup)
            {
                return UsageErrors.Report(unsafeSetup);
            }

            ShutdownSignals.WarnIfInterruptIgnored(Console.Error);
            return await TargetServer.RunAsync(options).ConfigureAwait(false);
        });
        return root;
    }
}
