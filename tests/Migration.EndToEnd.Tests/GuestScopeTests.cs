using Grpc.Core;
using Grpc.Net.Client;
using Migration.Management;
using Migration.Source.Cli;
using Migration.TestSupport;
using ManagementClient = Migration.Management.Management.ManagementClient;

using static Migration.EndToEnd.Tests.ManagementCalls;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// A target's management API is scoped to the guest: a guest that migrates onward takes its rights, watchers and
/// reports with it. The next guest the target receives (the same VM come back, here) is a new guest: calls naming the
/// old one are refused saying where it went, and query-migrate shows the new guest nothing of the old one's.
/// </summary>
public sealed class GuestScopeTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task GuestThatLeaves_EndsItsWatch_AndItsIdNoLongerDrivesTheTarget()
    {
        await using var b = await TargetProcess.StartAsync([], Limit);
        await using var c = await TargetProcess.StartAsync([], Limit);
        await using var source = ChildProgram.Source(
            ["run", "--listen", "http://127.0.0.1:0", "--ram", "32MiB", "--vcpus", "1"]);
        await source.WaitForLineAsync("management API listening on", Limit);
        using (var channel = GrpcChannel.ForAddress(ApiAddress(source)))
        {
            var api = new ManagementClient(channel);
            var toB = await api.StartMigrationAsync(new StartMigrationRequest { Target = b.Address.ToString() });
            Assert.Equal("completed", (await WaitForMigrationAsync(api, toB)).Status);
        }

        using var bChannel = GrpcChannel.ForAddress(b.Address);
        var bApi = new ManagementClient(bChannel);
        string x = (await bApi.QueryVmAsync(new QueryVmRequest())).GuestId;
        Assert.Matches("^[0-9a-f]{32}$", x);
        using var timeout = new CancellationTokenSource(Limit);
        using var watch = bApi.WatchEvents(new WatchEventsRequest { GuestId = x }, cancellationToken: timeout.Token);
        await watch.ResponseHeadersAsync;

        // X moves on to C; its watcher sees the migration end, then its stream ends saying where X went
        var toC = await bApi.StartMigrationAsync(new StartMigrationRequest
        {
            Target = c.Address.ToString(),
            GuestId = x,
        });
        Assert.Equal(x, toC.GuestId);
        Assert.Equal("completed", (await WaitForMigrationAsync(bApi, toC)).Status);
        var kinds = new List<string>();
        var ended = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            while (await watch.ResponseStream.MoveNext(timeout.Token))
            {
                Assert.Equal(x, watch.ResponseStream.Current.GuestId);
                kinds.Add($"{watch.ResponseStream.Current.Kind}:{watch.ResponseStream.Current.MigrationStatus}");
            }
        });
        Assert.Equal(StatusCode.FailedPrecondition, ended.StatusCode);
        Assert.Contains($"guest {x} left this target: it migrated to {c.Address}", ended.Status.Detail,
            StringComparison.Ordinal);
        Assert.Equal("migration:completed", kinds[^1]);

        // C sends it back: B runs a new guest, Y
        using var cChannel = GrpcChannel.ForAddress(c.Address);
        var cApi = new ManagementClient(cChannel);
        var back = await cApi.StartMigrationAsync(new StartMigrationRequest { Target = b.Address.ToString() });
        Assert.Equal("completed", (await WaitForMigrationAsync(cApi, back)).Status);
        string y = (await bApi.QueryVmAsync(new QueryVmRequest())).GuestId;
        Assert.NotEqual(x, y);

        // whoever drove X drives nothing of Y
        string refusal = $"guest {x} left this target: it migrated to {c.Address}; the current guest is {y}";
        await AssertStatusAsync(StatusCode.FailedPrecondition, refusal,
            bApi.SetBalloonAsync(new SetBalloonRequest { LogicalSizeBytes = 16 << 20, GuestId = x }).ResponseAsync);
        await AssertStatusAsync(StatusCode.FailedPrecondition, refusal,
            bApi.QueryStatsAsync(new QueryStatsRequest { GuestId = x }).ResponseAsync);
        await AssertStatusAsync(StatusCode.FailedPrecondition, refusal,
            bApi.StartMigrationAsync(new StartMigrationRequest { Target = c.Address.ToString(), GuestId = x })
                .ResponseAsync);
        await AssertStatusAsync(StatusCode.FailedPrecondition, refusal,
            bApi.CancelMigrationAsync(new CancelMigrationRequest { GuestId = x }).ResponseAsync);
        using (var stale = bApi.WatchEvents(new WatchEventsRequest { GuestId = x }, cancellationToken: timeout.Token))
        {
            var refused = await Assert.ThrowsAsync<RpcException>(() => stale.ResponseStream.MoveNext(timeout.Token));
            Assert.Equal(StatusCode.FailedPrecondition, refused.StatusCode);
        }

        // query-migrate shows Y's driver nothing of X's; X's own report stays with whoever names X
        var ofY = await bApi.QueryMigrationAsync(new QueryMigrationRequest());
        Assert.Equal(("none", y), (ofY.Status, ofY.GuestId));
        Assert.Equal(string.Empty, ofY.ReportJson);
        var ofX = await bApi.QueryMigrationAsync(new QueryMigrationRequest { GuestId = x });
        Assert.Equal(("completed", x), (ofX.Status, ofX.GuestId));
        Assert.Equal("running", (await bApi.QueryVmAsync(new QueryVmRequest())).State);
    }
}
