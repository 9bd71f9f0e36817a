using Grpc.Core;
using Grpc.Net.Client;
using Migration.Management;
using Migration.Source.Cli;
using ManagementApi = Migration.Management.Management;
using ManagementClient = Migration.Management.Management.ManagementClient;

using static Migration.EndToEnd.Tests.ManagementCalls;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Bad input to the management API, on `run` and on a target serving a received guest: bytes that do not decode are
/// InvalidArgument naming the message on every method (as the migration service answers), with no stack trace in
/// either process's output.
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
        await api.StartMigrationAsync(new StartMigrationRequest { Target = target.Address.ToString() });
        Assert.Equal("completed", (await WaitForMigrationAsync(api)).Status);
        await AssertAllInvalidAsync(target.Address); // with a guest there too

        Assert.DoesNotContain(source.Output, IsStackFrame);
        Assert.DoesNotContain(target.Output, IsStackFrame);
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
