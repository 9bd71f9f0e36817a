using System.Text.Json;
using Grpc.Core;
using Grpc.Net.Client;
using Migration.Management;
using Migration.Source.Cli;
using Migration.TestSupport;
using ManagementClient = Migration.Management.Management.ManagementClient;

using static Migration.EndToEnd.Tests.ManagementCalls;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Ballooning with real processes: a guest run by `run`, driven through the management API (balloon, events, a
/// migration, the refusals), received by a target that serves the same API; and `migrate --balloon`.
/// </summary>
public sealed class BalloonApiTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);
    private const long Mib = 1L << 20;

    [Fact]
    public async Task RunningGuest_BalloonedAndMigratedThroughTheApi_TheTargetHoldsTheBalloon()
    {
        await using var target = await TargetProcess.StartAsync(["--run-after", "60"], Limit);
        await using var source = ChildProgram.Source(
        [
            "run", "--listen", "http://127.0.0.1:0", "--ram", "64MiB", "--vcpus", "1", "--workload", "memhog",
            "--memhog-share", "0.5", "--balloon-encoding", "bitmap",
        ]);
        await source.WaitForLineAsync("management API listening on", Limit);
        using var channel = GrpcChannel.ForAddress(ApiAddress(source));
        var api = new ManagementClient(channel);
        using var watch = api.WatchEvents(new WatchEventsRequest());
        await watch.ResponseHeadersAsync; // registered: the target change below is its first event

        // 16 MiB into the balloon: QMP's logical size, 48 MiB
        var set = await api.SetBalloonAsync(new SetBalloonRequest { LogicalSizeBytes = 48 * Mib });
        Assert.Equal(4096ul, set.TargetPages);
        var balloon = await WaitForBalloonAsync(api, 4096);
        Assert.Equal((4096ul, "bitmap", 0ul), (balloon.HeldPages, balloon.Encoding, balloon.DeviceErrors));
        Assert.Equal((ulong)(48 * Mib), balloon.LogicalSizeBytes);
        var seen = new List<string>();
        while (!seen.Contains("balloon-change") && await watch.ResponseStream.MoveNext())
        {
            seen.Add(watch.ResponseStream.Current.Kind);
        }

        Assert.Equal("balloon-target", seen[0]);

        // bad calls: clear codes, nothing changes
        await AssertStatusAsync(StatusCode.InvalidArgument, "larger than the guest's RAM",
            api.SetBalloonAsync(new SetBalloonRequest { LogicalSizeBytes = 65 * Mib }).ResponseAsync);
        await AssertStatusAsync(StatusCode.InvalidArgument, "less than one page",
            api.SetBalloonAsync(new SetBalloonRequest { LogicalSizeBytes = 100 }).ResponseAsync);
        await AssertStatusAsync(StatusCode.InvalidArgument, "not an http",
            api.StartMigrationAsync(new StartMigrationRequest { Target = "nowhere" }).ResponseAsync);
        await AssertStatusAsync(StatusCode.InvalidArgument, "compression",
            api.StartMigrationAsync(new StartMigrationRequest
            {
                Target = target.Address.ToString(),
                Compression = "zip",
            }).ResponseAsync);
        await AssertStatusAsync(StatusCode.FailedPrecondition, "no migration is running",
            api.CancelMigrationAsync(new CancelMigrationRequest()).ResponseAsync);
        Assert.Equal(4096ul, (await api.QueryBalloonAsync(new QueryBalloonRequest())).TargetPages);

        // the statistics queue: QEMU's guest-stats shape, fresh on request, and a polling interval that travels
        var stats = await api.QueryStatsAsync(new QueryStatsRequest { Refresh = true });
        Assert.Equal(16, stats.Stats.Count);
        // managed memory (the kernel's own pages are not), the balloon included: deflate-on-OOM may take it back
        Assert.InRange(stats.Stats["stat-total-memory"], 60 * Mib, 64 * Mib - 1);
        Assert.InRange(stats.Stats["stat-free-memory"], 1, 64 * Mib);
        Assert.True(stats.LastUpdate > 0);
        Assert.Equal(3u, (await api.SetStatsPollingAsync(new SetStatsPollingRequest { IntervalSeconds = 3 }))
            .PollingIntervalSeconds);
        await AssertStatusAsync(StatusCode.InvalidArgument, "a day",
            api.SetStatsPollingAsync(new SetStatsPollingRequest { IntervalSeconds = 86401 }).ResponseAsync);

        var started = await api.StartMigrationAsync(new StartMigrationRequest { Target = target.Address.ToString() });
        Assert.Equal("active", started.Status);
        await AssertStatusAsync(StatusCode.FailedPrecondition, "already running",
            api.StartMigrationAsync(new StartMigrationRequest { Target = target.Address.ToString() }).ResponseAsync);
        var done = await WaitForMigrationAsync(api, started);
        Assert.True(done.Status == "completed", done.Error);
        using (var report = JsonDocument.Parse(done.ReportJson))
        {
            Assert.Equal(4096, report.RootElement.GetProperty("transfer").GetProperty("pagesSkippedAsBallooned")
                .GetInt64());
            Assert.Equal(4096, report.RootElement.GetProperty("balloon").GetProperty("heldPages").GetInt64());
        }

        Assert.Equal("none", (await api.QueryVmAsync(new QueryVmRequest())).State);
        await AssertStatusAsync(StatusCode.FailedPrecondition, "migrated",
            api.QueryBalloonAsync(new QueryBalloonRequest()).ResponseAsync);

        // the target serves the guest it resumed: the balloon came with it, and deflates through its API
        using var targetChannel = GrpcChannel.ForAddress(target.Address);
        var targetApi = new ManagementClient(targetChannel);
        var vm = await targetApi.QueryVmAsync(new QueryVmRequest());
        Assert.Equal(("target", "running"), (vm.Role, vm.State));
        var there = await targetApi.QueryBalloonAsync(new QueryBalloonRequest());
        Assert.Equal((4096ul, 4096ul, 4096ul), (there.TargetPages, there.ActualPages, there.HeldPages));
        // stats keep flowing on the target (R19): the guest queued its buffer again, and the interval came along
        var after = await targetApi.QueryStatsAsync(new QueryStatsRequest { Refresh = true });
        Assert.Equal(3u, after.PollingIntervalSeconds);
        Assert.True(after.Reports >= 2, $"{after.Reports} stats reports on the target");
        Assert.True(after.LastUpdate >= stats.LastUpdate);
        await targetApi.SetBalloonAsync(new SetBalloonRequest { LogicalSizeBytes = 60 * Mib });
        Assert.Equal(1024ul, (await WaitForBalloonAsync(targetApi, 1024)).HeldPages);
        await AssertStatusAsync(StatusCode.FailedPrecondition, "onward",
            targetApi.StartMigrationAsync(new StartMigrationRequest { Target = "http://127.0.0.1:1" }).ResponseAsync);
    }

    [Fact]
    public async Task CancelThroughTheApi_StopsTheMigration_AndTheGuestRunsOnForTheNext()
    {
        await using var target = await TargetProcess.StartAsync([], Limit);
        await using var source = ChildProgram.Source(
        [
            "run", "--listen", "http://127.0.0.1:0", "--ram", "64MiB", "--vcpus", "1", "--workload", "memhog",
            "--memhog-share", "0.9",
        ]);
        await source.WaitForLineAsync("management API listening on", Limit);
        using var channel = GrpcChannel.ForAddress(ApiAddress(source));
        var api = new ManagementClient(channel);
        await Task.Delay(2000); // memhog fills 90% and frees it: without hints its stale data goes as data

        // 58 MiB at 8 MB/s: round 0 alone takes seven seconds, so the cancel lands inside it
        var first = await api.StartMigrationAsync(new StartMigrationRequest
        {
            Target = target.Address.ToString(),
            Hints = false,
            MaxBandwidthBytesPerSecond = 8_000_000,
        });
        await target.WaitForStateAsync(Limit, "receiving");
        Assert.Equal("active", (await api.CancelMigrationAsync(new CancelMigrationRequest())).Status);
        var cancelled = await WaitForMigrationAsync(api, first);
        Assert.Equal("cancelled", cancelled.Status);
        Assert.Equal("running", (await api.QueryVmAsync(new QueryVmRequest())).State);
        Assert.Equal("failed", await target.WaitForStateAsync(Limit, "failed"));

        var next = await api.StartMigrationAsync(new StartMigrationRequest { Target = target.Address.ToString() });
        Assert.Equal("active", next.Status);
        Assert.Equal("completed", (await WaitForMigrationAsync(api, next)).Status);
    }

    [Fact]
    public async Task Migrate_WithBalloon_NeitherScansNorSendsTheBalloon()
    {
        await using var target = await TargetProcess.StartAsync([], Limit);
        string report = Path.Combine(Path.GetTempPath(), $"balloon-{Guid.NewGuid():N}.json");
        try
        {
            await using var source = ChildProgram.Source(
            [
                "migrate", "--target", target.Address.ToString(), "--ram", "64MiB", "--vcpus", "1",
                "--warmup-seconds", "0", "--balloon", "32MiB", "--balloon-encoding", "chunks", "--report", report,
            ]);
            Assert.Equal(CommandLine.Completed, await source.WaitForExitAsync(Limit));
            Assert.True(source.Printed("source: balloon at 32 MiB of 32 MiB"), string.Join('\n', source.Output));
            using var json = JsonDocument.Parse(await File.ReadAllTextAsync(report));
            var root = json.RootElement;
            Assert.Equal(8192, root.GetProperty("transfer").GetProperty("pagesSkippedAsBallooned").GetInt64());
            Assert.Equal("Chunks", root.GetProperty("balloon").GetProperty("encoding").GetString());
            Assert.Equal(8192, root.GetProperty("balloon").GetProperty("heldPages").GetInt64());
        }
        finally
        {
            File.Delete(report);
        }

        await AssertBadUsageAsync(["--balloon", "64MiB"], "smaller than the guest's RAM");
        await AssertBadUsageAsync(["--balloon-encoding", "zip"], "--balloon-encoding must be one of");
    }

    private static async Task AssertBadUsageAsync(string[] extra, string expected)
    {
        await using var source = ChildProgram.Source(
            ["migrate", "--target", "http://127.0.0.1:1", "--ram", "64MiB", .. extra]);
        Assert.Equal(2, await source.WaitForExitAsync(Limit));
        Assert.True(source.Printed(expected), string.Join('\n', source.Output));
    }
}
