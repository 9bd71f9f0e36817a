using Grpc.Core;
using Grpc.Net.Client;
using Migration.Management;
using Migration.Source.Cli;
using Migration.TestSupport;
using ManagementApi = Migration.Management.Management;
using ManagementClient = Migration.Management.Management.ManagementClient;

using static Migration.EndToEnd.Tests.ManagementCalls;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Bad input to the management API, on `run` and on a target serving a received guest: bytes that do not decode are
/// InvalidArgument naming the message on every method (as the migration service answers), with no stack trace in
/// either process's output; a migration request names the API's fields, never a command-line flag.
/// </summary>
public sealed class ManagementInputTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);
    private static readonly Marshaller<byte[]> Bytes = Marshallers.Create(b => b, b => b);

    /// <summary>Every method of the service, with its request message's name.</summary>
    private static readonly (string Method, string Request, bool Streaming)[] Methods =
    [
        ("QueryVm", "QueryVmRequest", false), ("SetBalloon", "SetBalloonRequest", false),
        ("QueryBalloon", "QueryBalloonRequest", false), ("QueryStats", "QueryStatsRequest", false),
        ("SetStatsPolling", "SetStatsPollingRequest", false), ("WatchEvents", "WatchEventsRequest", true),
        ("StartMigration", "StartMigrationRequest", false), ("QueryMigration", "QueryMigrationRequest", false),
        ("CancelMigration", "CancelMigrationRequest", false),
        ("SetMigrationParameters", "SetMigrationParametersRequest", false),
    ];

    /// <summary>Bytes no protobuf parser takes: a varint that never ends, a length past the end, a group end.</summary>
    private static readonly byte[][] Garbage =
    [
        [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        [0x0a, 0x7f, 0x01],
        [0x0c],
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ];

    [Fact]
    public async Task UndecodableRequests_AreInvalidArgument_OnRunAndOnATarget_WithNoStackTrace()
    {
        Assert.Equal(Methods.Length, ManagementApi.Descriptor.Methods.Count);
        await using var target = await TargetProcess.StartAsync([], Limit);
        await using var source = ChildProgram.Source(
            ["run", "--listen", "http://127.0.0.1:0", "--ram", "32MiB", "--vcpus", "1"]);
        await source.WaitForLineAsync("management API listening on", Limit);
        var address = ApiAddress(source);

        await AssertAllInvalidAsync(address);
        await AssertAllInvalidAsync(target.Address);

        // both still serve: the source migrates its guest to the target, whose API then answers for it
        using var channel = GrpcChannel.ForAddress(address);
        var api = new ManagementClient(channel);
        var started = await api.StartMigrationAsync(new StartMigrationRequest { Target = target.Address.ToString() });
        Assert.Equal("completed", (await WaitForMigrationAsync(api, started)).Status);
        await AssertAllInvalidAsync(target.Address); // with a guest there too

        Assert.DoesNotContain(source.Output, IsStackFrame);
        Assert.DoesNotContain(target.Output, IsStackFrame);
    }

    [Theory]
    [InlineData("channels", "channels must be 1..64")]
    [InlineData("max_rounds", "max_rounds must be at least 1")]
    [InlineData("max_bandwidth_bytes_per_second", "max_bandwidth_bytes_per_second must be positive")]
    [InlineData("compression", "compression '1' is not one of none, lz4")]
    [InlineData("compression-list", "compression 'none,lz4' is not one of none, lz4")]
    [InlineData("hints", "set hints to false")]
    public async Task BadMigrationRequests_NameTheApiField_NeverAFlag(string field, string expected)
    {
        await using var source = ChildProgram.Source(
        [
            "run", "--listen", "http://127.0.0.1:0", "--ram", "32MiB", "--vcpus", "1",
            "--dirty-log", "manual", "--wait-on-ack", "off",
        ]);
        await source.WaitForLineAsync("management API listening on", Limit);
        using var channel = GrpcChannel.ForAddress(ApiAddress(source));
        var api = new ManagementClient(channel);
        // hints off, except where the case is about hints: this guest cannot take them safely (race R5)
        var request = new StartMigrationRequest { Target = "http://127.0.0.1:1", Hints = false };
        switch (field)
        {
            case "channels": request.Channels = 0; break;
            case "max_rounds": request.MaxRounds = 0; break;
            case "max_bandwidth_bytes_per_second": request.MaxBandwidthBytesPerSecond = 0; break;
            case "compression": request.Compression = "1"; break;
            case "compression-list": request.Compression = "none,lz4"; break;
            case "hints": request.ClearHints(); break;
        }

        var error = await Assert.ThrowsAsync<RpcException>(() => api.StartMigrationAsync(request).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
        Assert.Contains(expected, error.Status.Detail, StringComparison.Ordinal);
        Assert.DoesNotContain("--", error.Status.Detail, StringComparison.Ordinal);
        Assert.Equal("none", (await api.QueryMigrationAsync(new QueryMigrationRequest())).Status);
    }

    private static bool IsStackFrame(string line) =>
        line.TrimStart().StartsWith("at ", StringComparison.Ordinal) && line.Contains('(', StringComparison.Ordinal);

    private static async Task AssertAllInvalidAsync(Uri address)
    {
        using var channel = GrpcChannel.ForAddress(address);
        var invoker = channel.CreateCallInvoker();
        foreach (var (name, request, streaming) in Methods)
        {
            foreach (byte[] garbage in Garbage)
            {
                var type = streaming ? MethodType.ServerStreaming : MethodType.Unary;
                var method = new Method<byte[], byte[]>(type, ManagementApi.Descriptor.FullName, name, Bytes, Bytes);
                var options = new CallOptions(deadline: DateTime.UtcNow + Limit);
                var error = await Assert.ThrowsAsync<RpcException>(async () =>
                {
                    if (streaming)
                    {
                        using var call = invoker.AsyncServerStreamingCall(method, null, options, garbage);
                        while (await call.ResponseStream.MoveNext(CancellationToken.None))
                        {
                        }
                    }
                    else
                    {
                        await invoker.AsyncUnaryCall(method, null, options, garbage);
                    }
                });
                Assert.True(error.StatusCode == StatusCode.InvalidArgument,
                    $"{name} at {address} answered {error.StatusCode}: {error.Status.Detail}");
                Assert.Contains(request, error.Status.Detail, StringComparison.Ordinal);
            }
        }
    }
}
