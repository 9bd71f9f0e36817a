using Grpc.Core;
using Migration.Management;
using Migration.TestSupport;
using ManagementClient = Migration.Management.Management.ManagementClient;

namespace Migration.EndToEnd.Tests;

/// <summary>What the management API tests do over and over: find the API, wait for the balloon or a migration.</summary>
internal static class ManagementCalls
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    public static Uri ApiAddress(ChildProgram source)
    {
        string line = source.Output.First(l => l.Contains("management API listening on", StringComparison.Ordinal));
        return new Uri(line[(line.LastIndexOf(' ') + 1)..]);
    }

    public static async Task<BalloonInfo> WaitForBalloonAsync(ManagementClient api, ulong pages)
    {
        var deadline = DateTime.UtcNow + Limit;
        BalloonInfo info;
        while ((info = await api.QueryBalloonAsync(new QueryBalloonRequest())).ActualPages != pages
            || info.HeldPages != pages)
        {
            Assert.True(DateTime.UtcNow < deadline, $"the balloon stayed at {info}");
            await Task.Delay(20);
        }

        return info;
    }

    /// <summary>The migration <paramref name="started"/> answered for, once it ended (its guest may be gone).</summary>
    public static async Task<MigrationInfo> WaitForMigrationAsync(ManagementClient api, MigrationInfo started)
    {
        var deadline = DateTime.UtcNow + Limit;
        MigrationInfo info;
        var query = new QueryMigrationRequest { GuestId = started.GuestId };
        while ((info = await api.QueryMigrationAsync(query)).Status == "active")
        {
            Assert.True(DateTime.UtcNow < deadline, "the migration did not end");
            await Task.Delay(50);
        }

        return info;
    }

    public static async Task AssertStatusAsync<T>(StatusCode code, string detail, Task<T> call)
    {
        var error = await Assert.ThrowsAsync<RpcException>(() => call);
        Assert.Equal(code, error.StatusCode);
        Assert.Contains(detail, error.Status.Detail, StringComparison.Ordinal);
    }
}
