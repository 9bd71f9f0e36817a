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
/// A target migrates the guest it received onward through its management API, with the source's engine: source to
/// B, B to C, C back to B (QEMU's ping-pong test). Each hop verifies; the balloon and the hints travel; a target that
/// let its guest go is idle and receives again.
/// </summary>
public sealed class OnwardMigrationTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);
    private const long Mib = 1L << 20;

    [Fact]
    public async Task ReceivedGuest_MigratesOnward_AndBack_EachHopVerified()
    {
        await using var b = await TargetProcess.StartAsync([], Limit);
        await using var c = await TargetProcess.StartAsync([], Limit);
        await using var source = await RunMigratedToAsync(b,
            ["--ram", "64MiB", "--vcpus", "2", "--workload", "memhog", "--memhog-share", "0.6"]);

        // B inflates 16 MiB, then moves the guest on to C: the balloon is neither scanned nor sent
        using var bChannel = GrpcChannel.ForAddress(b.Address);
        var bApi = new ManagementClient(bChannel);
        Assert.Equal("running", (await bApi.QueryVmAsync(new QueryVmRequest())).State);
        await bApi.SetBalloonAsync(new SetBalloonRequest { LogicalSizeBytes = 48 * Mib });
        await WaitForBalloonAsync(bApi, 4096);
        await AssertStatusAsync(StatusCode.InvalidArgument, "not an http",
            bApi.StartMigrationAsync(new StartMigrationRequest { Target = "nowhere" }).ResponseAsync);
        var started = await bApi.StartMigrationAsync(new StartMigrationRequest { Target = c.Address.ToString() });
        Assert.Equal("active", started.Status);
        var hop = await WaitForMigrationAsync(bApi, started);
        Assert.True(hop.Status == "completed", hop.Error);
        using (var report = JsonDocument.Parse(hop.ReportJson))
        {
            var transfer = report.RootElement.GetProperty("transfer");
            Assert.True(report.RootElement.GetProperty("verified").GetBoolean());
            Assert.Equal(4096, transfer.GetProperty("pagesSkippedAsBallooned").GetInt64());
            Assert.True(transfer.GetProperty("pagesSkippedByHints").GetInt64() > 0); // the received guest hints too
        }

        Assert.Equal("idle", await b.WaitForStateAsync(Limit, "idle"));
        Assert.Equal("none", (await bApi.QueryVmAsync(new QueryVmRequest())).State);
        await AssertStatusAsync(StatusCode.FailedPrecondition, "no guest",
            bApi.StartMigrationAsync(new StartMigrationRequest { Target = c.Address.ToString() }).ResponseAsync);

        // C runs it with the balloon it came with, and sends it back to B, which receives again
        using var cChannel = GrpcChannel.ForAddress(c.Address);
        var cApi = new ManagementClient(cChannel);
        var there = await cApi.QueryBalloonAsync(new QueryBalloonRequest());
        Assert.Equal((4096ul, 4096ul), (there.ActualPages, there.HeldPages));
        var returning = await cApi.StartMigrationAsync(new StartMigrationRequest
        {
            Target = b.Address.ToString(),
            Channels = 1,
        });
        var back = await WaitForMigrationAsync(cApi, returning);
        Assert.True(back.Status == "completed", back.Error);
        Assert.Equal("idle", await c.WaitForStateAsync(Limit, "idle"));
        Assert.Equal(("target", "running"), ((await bApi.QueryVmAsync(new QueryVmRequest())).Role,
            (await bApi.QueryVmAsync(new QueryVmRequest())).State));
        Assert.Equal(4096ul, (await bApi.QueryBalloonAsync(new QueryBalloonRequest())).HeldPages);
    }

    [Fact]
    public async Task OnwardToADeadTarget_Fails_AndTheGuestRunsOnHere()
    {
        await using var b = await TargetProcess.StartAsync([], Limit);
        await using var source = await RunMigratedToAsync(b, ["--ram", "32MiB", "--vcpus", "1", "--workload", "busy"]);

        using var bChannel = GrpcChannel.ForAddress(b.Address);
        var bApi = new ManagementClient(bChannel);
        var started = await bApi.StartMigrationAsync(new StartMigrationRequest { Target = "http://127.0.0.1:1" });
        var failed = await WaitForMigrationAsync(bApi, started);
        Assert.Equal("failed", failed.Status);
        Assert.False(string.IsNullOrEmpty(failed.Error));
        Assert.Equal("running", (await bApi.QueryVmAsync(new QueryVmRequest())).State);
        Assert.Equal("resumed", await b.StateAsync());
    }

    /// <summary>A guest booted by `run` and migrated to <paramref name="first"/> through the source's API.</summary>
    private static async Task<ChildProgram> RunMigratedToAsync(TargetProcess first, string[] guest)
    {
        var source = ChildProgram.Source(["run", "--listen", "http://127.0.0.1:0", .. guest]);
        try
        {
            await source.WaitForLineAsync("management API listening on", Limit);
            using var channel = GrpcChannel.ForAddress(ApiAddress(source));
            var api = new ManagementClient(channel);
            var started = await api.StartMigrationAsync(new StartMigrationRequest
            {
                Target = first.Address.ToString(),
            });
            Assert.Equal("completed", (await WaitForMigrationAsync(api, started)).Status);
            return source;
        }
        catch
        {
            await source.DisposeAsync(); // killed, not left behind
            throw;
        }
    }
}
