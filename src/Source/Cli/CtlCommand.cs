using System.CommandLine;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Migration.Management;
using Migration.Shared.Cli;
using Migration.Shared.Protocol;
using Migration.Shared.Transport;
using ManagementClient = Migration.Management.Management.ManagementClient;

namespace Migration.Source.Cli;

/// <summary>
/// <c>ctl</c>: the management API's client, one subcommand per call (QMP's commands in spirit). Answers print as JSON;
/// a refused call prints its status code and reason and exits 1. Every call but query-vm names its guest: the one
/// <c>--guest</c> gives, or the one query-vm finds running when the command starts, so a command that lasts
/// (<c>events</c>, <c>migrate --wait</c>) stays with that guest and never drives the next one.
/// </summary>
internal static class CtlCommand
{
    private static readonly JsonFormatter Json = new(JsonFormatter.Settings.Default.WithFormatDefaultValues(true));

    public static Command Create()
    {
        var api = new Option<string>("--api")
        {
            Description = "Management API of a running VM (`run`, or a target running a guest)",
            DefaultValueFactory = _ => RunCommand.DefaultListen,
            Recursive = true,
        };
        var guestOption = new Option<string?>("--guest")
        {
            Description = "The guest to act on (query-vm's guest_id; default: the one running there now)",
            Recursive = true,
        };
        var security = new SecurityOptions("management API", recursive: true);
        var command = new Command("ctl", "Drive a running VM through its management API.") { api, guestOption };
        foreach (var option in security.All)
        {
            command.Options.Add(option);
        }

        var queryVm = new Command("query-vm", "What runs there: role, state, geometry.");
        queryVm.SetAction((parse, _) =>
            Call(parse, api, null, security, async (c, _) => Print(await c.QueryVmAsync(new QueryVmRequest()))));

        var size = new Argument<ByteSize>("SIZE")
        {
            Description = "The balloon's size (e.g. 512MiB; 0 deflates it): what the guest gives back to the host",
            CustomParser = r => ParseSize(r),
        };
        var balloon = new Command("balloon", "Set the balloon's target size.") { size };
        balloon.SetAction((parse, _) => Call(parse, api, guestOption, security, async (c, guest) =>
        {
            var now = await c.QueryBalloonAsync(new QueryBalloonRequest { GuestId = guest });
            long bytes = parse.GetValue(size).Bytes;
            BalloonInflation.PagesFor(bytes, (long)now.RamBytes, "SIZE"); // the same bound as --balloon
            Print(await c.SetBalloonAsync(new SetBalloonRequest
            {
                LogicalSizeBytes = now.RamBytes - (ulong)bytes,
                GuestId = guest,
            }));
        }));

        var queryBalloon = new Command("query-balloon", "The balloon as the device sees it.");
        queryBalloon.SetAction((parse, _) =>
            Call(parse, api, guestOption, security, async (c, guest) =>
                Print(await c.QueryBalloonAsync(new QueryBalloonRequest { GuestId = guest }))));

        var count = CliOptions.WholeNumber("--count", "Stop after this many events (0: until interrupted)", 0, 0,
            int.MaxValue);
        var events = new Command("events", "Print events as they happen, one JSON object per line.") { count };
        events.SetAction((parse, _) => Call(parse, api, guestOption, security, async (c, guest) =>
        {
            int wanted = parse.GetValue(count);
            using var call = c.WatchEvents(new WatchEventsRequest { GuestId = guest },
                cancellationToken: ShutdownSignals.Token);
            int seen = 0;
            try
            {
                await foreach (var e in call.ResponseStream.ReadAllAsync(ShutdownSignals.Token))
                {
                    Console.WriteLine(JsonFormatter.Default.Format(e));
                    if (++seen == wanted)
                    {
                        return;
                    }
                }
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && ShutdownSignals.Token
                .IsCancellationRequested)
            {
                // interrupted
            }
        }));

        var target = new Option<string>("--target") { Description = "Target URL", Required = true };
        var hints = new Option<OnOff?>("--hints") { Description = "Free page hinting: on | off (default on)" };
        var skipBallooned = new Option<OnOff?>("--skip-ballooned")
        {
            Description = "Neither scan nor send ballooned pages: on | off (default on; off sends zero pages)",
        };
        var skipDiscarded = new Option<OnOff?>("--skip-discarded")
        {
            Description = "Neither scan nor send pages free page reporting discarded: on | off (default on)",
        };
        var deltaCache = new Option<uint?>("--delta-cache-mib")
        {
            Description = "Delta pages (XBZRLE) with a cache of this many MiB of sent pages (default: off)",
        };
        var wait = new Option<bool>("--wait")
        {
            Description = "Wait for the migration to end; exit 1 unless it completed",
        };
        var migrate = new Command("migrate", "Migrate the running VM to a target.")
        {
            target, hints, skipBallooned, skipDiscarded, deltaCache, wait,
        };
        migrate.SetAction((parse, _) => Call(parse, api, guestOption, security, async (c, guest) =>
        {
            var request = new StartMigrationRequest { Target = parse.GetValue(target), GuestId = guest };
            if (parse.GetValue(hints) is { } h)
            {
                request.Hints = h == OnOff.On;
            }

            if (parse.GetValue(skipBallooned) is { } skip)
            {
                request.SkipBallooned = skip == OnOff.On;
            }

            if (parse.GetValue(skipDiscarded) is { } discarded)
            {
                request.SkipDiscarded = discarded == OnOff.On;
            }

            if (parse.GetValue(deltaCache) is { } startMib)
            {
                request.DeltaCacheBytes = (ulong)startMib << 20;
            }

            var info = await c.StartMigrationAsync(request);
            if (!parse.GetValue(wait))
            {
                Print(info);
                return 0;
            }

            while (info.Status == "active")
            {
                await Task.Delay(200, ShutdownSignals.Token);
                info = await c.QueryMigrationAsync(new QueryMigrationRequest { GuestId = guest });
            }

            info.ReportJson = string.Empty; // `query-migrate` prints it in full
            Print(info);
            return info.Status == "completed" ? 0 : 1;
        }));

        var queryMigrate = new Command("query-migrate", "The running or last migration, with its report once ended.");
        queryMigrate.SetAction((parse, _) =>
            Call(parse, api, guestOption, security, async (c, guest) =>
                Print(await c.QueryMigrationAsync(new QueryMigrationRequest { GuestId = guest }))));

        var cancel = new Command("migrate-cancel", "Cancel the running migration; the guest keeps running.");
        cancel.SetAction((parse, _) =>
            Call(parse, api, guestOption, security, async (c, guest) =>
                Print(await c.CancelMigrationAsync(new CancelMigrationRequest { GuestId = guest }))));

        var setParameters = SetParametersCommand(api, guestOption, security);

        var refresh = new Option<bool>("--refresh") { Description = "Ask the guest for fresh numbers first" };
        var stats = new Command("stats", "The guest's memory statistics (QEMU's guest-stats).") { refresh };
        stats.SetAction((parse, _) => Call(parse, api, guestOption, security, async (c, guest) =>
            Print(await c.QueryStatsAsync(new QueryStatsRequest
            {
                Refresh = parse.GetValue(refresh),
                GuestId = guest,
            }))));
        var seconds = new Argument<uint>("SECONDS") { Description = "Seconds between requests (0 stops polling)" };
        var polling = new Command("stats-polling", "How often the device asks the guest for statistics.") { seconds };
        polling.SetAction((parse, _) => Call(parse, api, guestOption, security, async (c, guest) =>
            Print(await c.SetStatsPollingAsync(new SetStatsPollingRequest
            {
                IntervalSeconds = parse.GetValue(seconds),
                GuestId = guest,
            }))));

        foreach (var sub in new[]
        {
            queryVm, balloon, queryBalloon, stats, polling, events, migrate, queryMigrate, cancel, setParameters,
        })
        {
            command.Subcommands.Add(sub);
        }

        return command;
    }

    /// <summary>
    /// <c>migrate-set-parameters</c>: changes the running migration's settings from its next round (QEMU's
    /// <c>migrate-set-parameters</c>); each flag left out keeps its value.
    /// </summary>
    private static Command SetParametersCommand(Option<string> api, Option<string?> guestOption,
        SecurityOptions security)
    {
        var downtime = new Option<double?>("--downtime-ms") { Description = "Downtime limit" };
        var bandwidth = new Option<string?>("--max-bandwidth")
        {
            Description = "Cap, e.g. 1Gbit or 500MB/s; 0 lifts it",
        };
        var maxRounds = new Option<uint?>("--max-rounds") { Description = "Fail after this many rounds" };
        var converge = new Option<string?>("--converge") { Description = "none | auto | dirtylimit" };
        var throttle = new Option<string?>("--throttle")
        {
            Description = "Auto-converge's steps in percent: INITIAL,INCREMENT,MAX",
        };
        var tailSlow = new Option<OnOff?>("--throttle-tailslow") { Description = "on | off" };
        var dirtyLimit = new Option<string?>("--dirty-limit")
        {
            Description = "Each vCPU's dirty-rate ceiling, e.g. 20MB/s; 0: derived from the link",
        };
        var deltaCacheSize = new Option<uint?>("--delta-cache-mib")
        {
            Description = "Resize the delta-page cache (MiB; 0 sends every page whole); for a migration with deltas",
        };
        var ramp = new Option<string?>("--downtime-ramp")
        {
            Description = "START:STEP in ms, or none",
        };
        var command = new Command("migrate-set-parameters",
            "Change the running migration's settings; each applies from its next round.")
        {
            downtime, bandwidth, maxRounds, converge, throttle, tailSlow, dirtyLimit, ramp, deltaCacheSize,
        };
        command.SetAction((parse, _) => Call(parse, api, guestOption, security, async (c, guest) =>
        {
            var request = new SetMigrationParametersRequest { GuestId = guest, Convergence = new() };
            var settings = request.Convergence;
            if (parse.GetValue(downtime) is { } ms)
            {
                request.DowntimeMs = ms;
            }

            if (parse.GetValue(bandwidth) is { } rate)
            {
                request.MaxBandwidthBytesPerSecond = RateOf("--max-bandwidth", rate);
            }

            if (parse.GetValue(maxRounds) is { } rounds)
            {
                request.MaxRounds = rounds;
            }

            if (parse.GetValue(converge) is { } method)
            {
                settings.Converge = method;
            }

            if (parse.GetValue(throttle) is { } steps)
            {
                var t = ConvergenceOptions.ParseThrottle(steps, tailSlow: false);
                settings.ThrottleInitialPercent = t.Initial * 100;
                settings.ThrottleIncrementPercent = t.Increment * 100;
                settings.ThrottleMaxPercent = t.Max * 100;
            }

            if (parse.GetValue(tailSlow) is { } slow)
            {
                settings.ThrottleTailslow = slow == OnOff.On;
            }

            if (parse.GetValue(dirtyLimit) is { } ceiling)
            {
                settings.DirtyLimitBytesPerSecond = RateOf("--dirty-limit", ceiling);
            }

            if (parse.GetValue(ramp) is { } r)
            {
                settings.DowntimeRamp = r == "none" ? string.Empty : r;
            }

            if (parse.GetValue(deltaCacheSize) is { } mib)
            {
                request.DeltaCacheBytes = (ulong)mib << 20;
            }

            Print(await c.SetMigrationParametersAsync(request));
        }));
        return command;
    }

    /// <summary>A rate flag's bytes per second ("0": none); a bad one is a usage error naming the flag.</summary>
    private static ulong RateOf(string flag, string text)
    {
        try
        {
            return text == "0" ? 0 : (ulong)Math.Min(Shared.Units.ParseRate(text), ulong.MaxValue);
        }
        catch (FormatException ex)
        {
            throw new ArgumentException($"{flag}: {ex.Message}", ex);
        }
    }

    private static ByteSize ParseSize(System.CommandLine.Parsing.ArgumentResult result)
    {
        string text = result.Tokens.Count == 1 ? result.Tokens[0].Value : string.Empty;
        try
        {
            return new ByteSize(Shared.Units.ParseBytes(text));
        }
        catch (Exception ex) when (ex is FormatException or OverflowException)
        {
            result.AddError($"SIZE: {ex.Message}");
            return default;
        }
    }

    private static void Print(IMessage message) => Console.WriteLine(Json.Format(message));

    private static Task<int> Call(ParseResult parse, Option<string> api, Option<string?>? guest,
        SecurityOptions security, Func<ManagementClient, string, Task> call) =>
        Call(parse, api, guest, security, async (c, g) =>
        {
            await call(c, g).ConfigureAwait(false);
            return 0;
        });

    /// <summary>
    /// One command against the API at <paramref name="api"/>, authenticated with <paramref name="security"/>, for the
    /// guest <paramref name="guest"/> names, or (unless null) the one running there now.
    /// </summary>
    private static async Task<int> Call(ParseResult parse, Option<string> api, Option<string?>? guest,
        SecurityOptions security, Func<ManagementClient, string, Task<int>> call)
    {
        if (!Uri.TryCreate(parse.GetValue(api), UriKind.Absolute, out var address))
        {
            return UsageErrors.Report($"--api '{parse.GetValue(api)}' is not a URL.");
        }

        TransportSecurity credentials;
        try
        {
            credentials = security.Bind(parse);
        }
        catch (ArgumentException ex)
        {
            return UsageErrors.Report(ex.Message);
        }

        using var channel = ControlChannel.Create(address, credentials);
        var invoker = credentials.Token is string token
            ? channel.Intercept(headers =>
            {
                headers.Add(WireNames.AuthorizationHeader, "Bearer " + token);
                return headers;
            })
            : channel.CreateCallInvoker();
        try
        {
            var client = new ManagementClient(invoker);
            string guestId = guest is null ? string.Empty
                : parse.GetValue(guest) ?? (await client.QueryVmAsync(new QueryVmRequest())).GuestId;
            return await call(client, guestId).ConfigureAwait(false);
        }
        catch (ArgumentException ex)
        {
            return UsageErrors.Report(ex.Message);
        }
        catch (RpcException ex)
        {
            string what = ex.StatusCode == StatusCode.Unavailable
                ? $"no management API answers at {address} ({ex.Status.Detail})"
                : $"{ex.StatusCode}: {ex.Status.Detail}";
            await Console.Error.WriteLineAsync($"error: {what}").ConfigureAwait(false);
            return CommandLine.Failed;
        }
        catch (OperationCanceledException)
        {
            return CommandLine.Failed;
        }
    }
}
