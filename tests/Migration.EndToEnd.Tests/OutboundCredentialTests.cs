using System.Collections.Concurrent;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Migration.Management;
using Migration.Source.Cli;
using Migration.TestSupport;
using ManagementClient = Migration.Management.Management.ManagementClient;

using static Migration.EndToEnd.Tests.ManagementCalls;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// A process's outbound credentials go only where its operator said: a migration started through the management API
/// to a target not given with `--allow-target` (`--onward-allow-target` on a target) is refused before anything
/// connects, and a token never crosses beyond loopback in clear. A recorder stands in for a stranger's server and
/// counts the connections and the authorization headers it gets.
/// </summary>
public sealed class OutboundCredentialTests : IDisposable
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);
    private readonly string _token = Path.Combine(Path.GetTempPath(), $"outbound-token-{Guid.NewGuid():N}");
    private readonly string _onwardToken = Path.Combine(Path.GetTempPath(), $"onward-token-{Guid.NewGuid():N}");

    public OutboundCredentialTests()
    {
        File.WriteAllText(_token, "the-source-token-for-targets\n");
        File.WriteAllText(_onwardToken, "the-onward-token-for-the-next\n");
    }

    public void Dispose()
    {
        File.Delete(_token);
        File.Delete(_onwardToken);
    }

    [Fact]
    public async Task Run_WithAToken_MigratesThroughTheApiOnlyToAllowedTargets()
    {
        await using var recorder = await Recorder.StartAsync();
        await using var target = await TargetProcess.StartAsync(["--token-file", _token], Limit);

        // no list: the token goes nowhere the API names
        await using (var bare = await RunAsync(["--token-file", _token]))
        {
            using var channel = GrpcChannel.ForAddress(ApiAddress(bare));
            var api = new ManagementClient(channel);
            await AssertStatusAsync(StatusCode.PermissionDenied, "--allow-target",
                api.StartMigrationAsync(new StartMigrationRequest { Target = recorder.Address }).ResponseAsync);
            Assert.Equal("none", (await api.QueryMigrationAsync(new QueryMigrationRequest())).Status);
        }

        // a list: only its members, compared by scheme, host and port; never in clear beyond loopback
        await using var source = await RunAsync(["--token-file", _token,
            "--allow-target", target.Address.ToString().TrimEnd('/').ToUpperInvariant(),
            "--allow-target", "https://192.0.2.1:50051"]);
        using (var channel = GrpcChannel.ForAddress(ApiAddress(source)))
        {
            var api = new ManagementClient(channel);
            await AssertStatusAsync(StatusCode.PermissionDenied, "target '" + recorder.Address,
                api.StartMigrationAsync(new StartMigrationRequest { Target = recorder.Address }).ResponseAsync);
            await AssertStatusAsync(StatusCode.PermissionDenied, "in clear",
                api.StartMigrationAsync(new StartMigrationRequest { Target = "http://192.0.2.1:50051" })
                    .ResponseAsync);
            Assert.Equal((0, 0), (recorder.Connections, recorder.Tokens.Count));

            var started = await api.StartMigrationAsync(new StartMigrationRequest
            {
                Target = target.Address.ToString(),
            });
            var done = await WaitForMigrationAsync(api, started);
            Assert.True(done.Status == "completed", done.Error);
        }

        Assert.Equal((0, 0), (recorder.Connections, recorder.Tokens.Count));
    }

    [Fact]
    public async Task Target_WithAnOnwardToken_MigratesOnwardOnlyToAllowedTargets()
    {
        await using var recorder = await Recorder.StartAsync();
        await using var c = await TargetProcess.StartAsync(["--token-file", _onwardToken], Limit);
        await using var b = await TargetProcess.StartAsync(
            ["--onward-token-file", _onwardToken, "--onward-allow-target", c.Address.ToString()], Limit);
        await using var source = await RunAsync([]);
        using (var channel = GrpcChannel.ForAddress(ApiAddress(source)))
        {
            var api = new ManagementClient(channel);
            var started = await api.StartMigrationAsync(new StartMigrationRequest { Target = b.Address.ToString() });
            Assert.Equal("completed", (await WaitForMigrationAsync(api, started)).Status);
        }

        using var bChannel = GrpcChannel.ForAddress(b.Address);
        var bApi = new ManagementClient(bChannel);
        await AssertStatusAsync(StatusCode.PermissionDenied, "--onward-allow-target",
            bApi.StartMigrationAsync(new StartMigrationRequest { Target = recorder.Address }).ResponseAsync);
        await AssertStatusAsync(StatusCode.PermissionDenied, "in clear",
            bApi.StartMigrationAsync(new StartMigrationRequest { Target = "http://192.0.2.1:50051" }).ResponseAsync);
        Assert.Equal("running", (await bApi.QueryVmAsync(new QueryVmRequest())).State);

        var onward = await bApi.StartMigrationAsync(new StartMigrationRequest { Target = c.Address.ToString() });
        var hop = await WaitForMigrationAsync(bApi, onward);
        Assert.True(hop.Status == "completed", hop.Error);
        Assert.Equal((0, 0), (recorder.Connections, recorder.Tokens.Count));
    }

    [Theory]
    [InlineData("run", "--allow-target")]
    [InlineData("migrate", "--target")]
    public async Task ATokenInClearBeyondLoopback_IsAUsageError(string command, string names)
    {
        string[] args = command == "run"
            ? ["run", "--listen", "http://127.0.0.1:0", "--ram", "32MiB", "--token-file", _token,
                "--allow-target", "http://192.0.2.1:50051"]
            : ["migrate", "--target", "http://192.0.2.1:50051", "--ram", "32MiB", "--token-file", _token];
        await using var program = ChildProgram.Source(args);
        Assert.Equal(2, await program.WaitForExitAsync(Limit));
        Assert.True(program.Printed(names) && program.Printed("in clear"), string.Join('\n', program.Output));
    }

    private static async Task<ChildProgram> RunAsync(string[] extra)
    {
        var source = ChildProgram.Source(
            ["run", "--listen", "http://127.0.0.1:0", "--ram", "32MiB", "--vcpus", "1", .. extra]);
        try
        {
            await source.WaitForLineAsync("management API listening on", Limit);
            return source;
        }
        catch
        {
            await source.DisposeAsync();
            throw;
        }
    }

    /// <summary>A plain HTTP/2 server on loopback that records who connected and what authorization they sent.</summary>
    private sealed class Recorder : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private int _connections;

        private Recorder(WebApplication app) => _app = app;

        public string Address { get; private set; } = string.Empty;

        public int Connections => Volatile.Read(ref _connections);

        public ConcurrentQueue<string> Tokens { get; } = new();

        public static async Task<Recorder> StartAsync()
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.UseUrls("http://127.0.0.1:0");
            Recorder? recorder = null;
            builder.WebHost.ConfigureKestrel(k => k.ConfigureEndpointDefaults(e =>
            {
                e.Protocols = HttpProtocols.Http2;
                e.Use(next => connection =>
                {
                    Interlocked.Increment(ref recorder!._connections);
                    return next(connection);
                });
            }));
            var app = builder.Build();
            recorder = new Recorder(app);
            app.Run(context =>
            {
                recorder.Tokens.Enqueue(context.Request.Headers.Authorization.ToString());
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                return Task.CompletedTask;
            });
            await app.StartAsync();
            recorder.Address = app.Services.GetRequiredService<IServer>().Features
                .Get<IServerAddressesFeature>()!.Addresses.First();
            return recorder;
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}
