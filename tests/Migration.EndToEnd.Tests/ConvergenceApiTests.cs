using System.Text.Json;
using Grpc.Core;
using Grpc.Net.Client;
using Migration.Management;
using Migration.Shared.Reporting;
using Migration.Source.Cli;
using Migration.TestSupport;
using ManagementClient = Migration.Management.Management.ManagementClient;

using static Migration.EndToEnd.Tests.ManagementCalls;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Live parameters with real processes: a migration started through the management API on a slow link is given a
/// faster link, auto-converge and a larger delta-page cache while it runs, and the report shows which settings each
/// round ran with.
/// </summary>
public sealed class ConvergenceApiTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task ParametersChangedDuringAMigration_ApplyFromTheNextRound_AndTheReportSaysSo()
    {
        await using var target = await TargetProcess.StartAsync(["--run-after", "0"], Limit);
        await using var source = ChildProgram.Source(
        [
            "run", "--listen", "http://127.0.0.1:0", "--ram", "96MiB", "--vcpus", "2", "--workload", "busy",
            "--busy-dirty-rate", "40MiB/s", "--busy-working-set", "0.5",
        ]);
        await source.WaitForLineAsync("management API listening on", Limit);
        using var channel = GrpcChannel.ForAddress(ApiAddress(source));
        var api = new ManagementClient(channel);

        await AssertStatusAsync(StatusCode.FailedPrecondition, "no migration is running",
            api.SetMigrationParametersAsync(new SetMigrationParametersRequest { DowntimeMs = 500 }).ResponseAsync);

        // 48 MiB of working set over 16 MB/s: round 0 takes about three seconds, and round 1, which resends what the
        // guest dirtied meanwhile, about as long again; the change is made once round 0 has ended
        var started = await api.StartMigrationAsync(new StartMigrationRequest
        {
            Target = target.Address.ToString(),
            MaxBandwidthBytesPerSecond = 16_000_000,
            MaxRounds = 1000,
            Convergence = new ConvergenceSettings { Converge = "none" },
            DeltaCacheBytes = 8 << 20,
        });
        Assert.Equal("active", started.Status);

        var deadline = DateTime.UtcNow + Limit;
        while ((await api.QueryMigrationAsync(new QueryMigrationRequest())).Rounds < 1)
        {
            Assert.True(DateTime.UtcNow < deadline, "round 0 did not end");
            await Task.Delay(20);
        }

        // bad values are refused and change nothing
        await AssertStatusAsync(StatusCode.InvalidArgument, "throttle",
            api.SetMigrationParametersAsync(new SetMigrationParametersRequest
            {
                Convergence = new ConvergenceSettings { ThrottleMaxPercent = 150 },
            }).ResponseAsync);
        await AssertStatusAsync(StatusCode.InvalidArgument, "converge 'fast'",
            api.SetMigrationParametersAsync(new SetMigrationParametersRequest
            {
                Convergence = new ConvergenceSettings { Converge = "fast" },
            }).ResponseAsync);
        await AssertStatusAsync(StatusCode.InvalidArgument, "downtime ramp",
            api.SetMigrationParametersAsync(new SetMigrationParametersRequest
            {
                Convergence = new ConvergenceSettings { DowntimeRamp = "fast" },
            }).ResponseAsync);

        var changed = await api.SetMigrationParametersAsync(new SetMigrationParametersRequest
        {
            MaxBandwidthBytesPerSecond = 0,
            DowntimeMs = 400,
            DeltaCacheBytes = 16 << 20,
            Convergence = new ConvergenceSettings { Converge = "auto", ThrottleInitialPercent = 30 },
        });
        using (var settings = JsonDocument.Parse(changed.ParametersJson))
        {
            Assert.Equal("auto", settings.RootElement.GetProperty("converge").GetString());
            Assert.Equal(400, settings.RootElement.GetProperty("downtimeMs").GetDouble());
            Assert.Equal(JsonValueKind.Null, settings.RootElement.GetProperty("maxBandwidthBytesPerSecond").ValueKind);
            Assert.Equal(16 << 20, settings.RootElement.GetProperty("deltaCacheBytes").GetInt64());
        }

        var ended = await WaitForMigrationAsync(api, started);
        Assert.Equal("completed", ended.Status);
        var report = MigrationReport.FromJson(ended.ReportJson);
        Assert.True(report.Verified);
        // Rule C2: each round runs with one set of settings, and a change applies from a round's start. The change
        // came after round 0 had ended, so round 0 ran as started; the rounds after it ran as started until one round
        // began after the change (usually round 2; round 1 when the change landed between the two, as it did once on
        // a loaded machine while round 0's end was being measured), and as changed from then on, every one.
        var asStarted = ("none", (double?)16_000_000d, 300d, (long?)(8 << 20));
        var asChanged = ("auto", (double?)null, 400d, (long?)(16 << 20));
        var ran = report.Rounds.Where(r => !r.Final)
            .Select(r => (r.Converge, r.MaxBandwidthBytesPerSec, r.DowntimeLimitMs, r.DeltaCacheBytes)).ToList();
        Assert.Equal(asStarted, ran[0]);
        int from = ran.IndexOf(asChanged);
        Assert.True(from >= 1, "no round ran with the changed settings");
        Assert.All(ran.Take(from), r => Assert.Equal(asStarted, r));
        Assert.All(ran.Skip(from), r => Assert.Equal(asChanged, r));
        Assert.True(report.Transfer.PagesDelta > 0, "the busy guest's resent pages went as deltas");
        Assert.Equal(1, report.Convergence.ParameterChanges);
        Assert.All(report.Rounds.Where(r => !r.Final), r => Assert.False(string.IsNullOrEmpty(r.Prediction)));
    }
}
