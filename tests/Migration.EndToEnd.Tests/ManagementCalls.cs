using Grpc.Core;
using Migration.Management;
using Migration.Source.Cli;
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

    public static async Task<MigrationInfo> WaitForMigrationAsync(ManagementClient api)
    {
        var deadline = DateTime.UtcNow + Limit;
        MigrationInfo info;
        while ((info = await api.QueryMigrationAsync(new QueryMigrationRequest())).Status == "active")
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
