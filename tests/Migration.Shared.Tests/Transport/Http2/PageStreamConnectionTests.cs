using System.Buffers.Binary;
using Grpc.Core;
using Migration.Shared.Transport;
using Migration.Shared.Transport.Http2;

namespace Migration.Shared.Tests.Transport.Http2;

/// <summary>
/// The page stream's HTTP/2 client against a scripted peer: frames within the target's frame size and windows, the
/// response and its status read back, and every way a target can fail it ending as a clear <see cref="RpcException"/>.
/// (Against the real target, every end-to-end migration uses it.)
/// </summary>
public sealed class PageStreamConnectionTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private static Task<PageStreamConnection> Connect(ScriptedHttp2Peer peer) =>
        PageStreamConnection.ConnectAsync(peer.Address, TransportSecurity.None, Timeout, CancellationToken.None);

    /// <summary>Writes <paramref name="message"/> as one gRPC message on a thread of its own, as a channel does.</summary>
    private static unsafe Task WriteOnAThread(PageStreamCall call, byte[] message) => Task.Factory.StartNew(() =>
    {
        fixed (byte* start = message)
        {
            IoVector[] pieces = [new IoVector(start, message.Length / 3), new IoVector(start + message.Length / 3,
                message.Length - message.Length / 3)];
            call.WriteMessage(pieces, message.Length, new IoVector[SocketGather.MaxVectors],
                new byte[FrameHeader.Size * 256]);
        }
    }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    /// <summary>A connection to <paramref name="peer"/> (default SETTINGS) with one call started, its HEADERS read.</summary>
    private static async Task<(PageStreamConnection Connection, PageStreamCall Call)> CallAsync(
        ScriptedHttp2Peer peer)
    {
        var connecting = Connect(peer);
        await peer.AcceptAsync();
        var connection = await connecting;
        var call = connection.StartCall("/svc/Method", []);
        await peer.ReadUntilAsync(FrameType.Headers);
        return (connection, call);
    }

    [Fact]
    public async Task A_message_goes_in_frames_within_the_targets_limits_and_the_summary_comes_back()
    {
        await using var peer = new ScriptedHttp2Peer();
        var connecting = Connect(peer);
        const int StreamWindow = 20_000;
        await peer.AcceptAsync((SettingId.MaxFrameSize, 16_384), (SettingId.InitialWindowSize, StreamWindow));
        using var connection = await connecting;
        var call = connection.StartCall("/svc/Method", [KeyValuePair.Create("x-id", "m1")]);
        var headers = await peer.ReadUntilAsync(FrameType.Headers);
        Assert.Equal(call.Id, headers.Header.StreamId);

        var message = new byte[150_000];
        new Random(7).NextBytes(message);
        var writing = WriteOnAThread(call, message);

        // Play a target that grants credit only as it receives: the client must never get ahead of either window.
        var received = new List<byte>();
        long connectionCredit = 65_535, streamCredit = StreamWindow;
        while (received.Count < message.Length)
        {
            var (frame, payload) = await peer.ReadAsync();
            if (frame.Type != FrameType.Data)
            {
                continue;
            }

            Assert.True(frame.Length <= 16_384, $"a DATA frame of {frame.Length} bytes");
            connectionCredit -= frame.Length;
            streamCredit -= frame.Length;
            Assert.True(connectionCredit >= 0 && streamCredit >= 0, "the client overran a flow-control window");
            received.AddRange(payload);
            if (streamCredit < StreamWindow / 2)
            {
                int grant = StreamWindow - (int)streamCredit;
                await peer.WindowUpdateAsync(call.Id, grant);
                await peer.WindowUpdateAsync(0, grant);
                streamCredit += grant;
                connectionCredit += grant;
            }
        }

        await writing.WaitAsync(Timeout);
        Assert.Equal(message, received.ToArray());

        call.CompleteRequest();
        var end = await peer.ReadUntilAsync(FrameType.Data);
        Assert.True(end.Header.Has(FrameFlags.EndStream) && end.Header.Length == 0);
        await peer.WriteAsync(FrameType.Headers, FrameFlags.EndHeaders, call.Id,
            [0x88, .. ScriptedHttp2Peer.Block(("content-type", "application/grpc"))]);
        await peer.WriteAsync(FrameType.Data, FrameFlags.None, call.Id, ScriptedHttp2Peer.GrpcMessage([1, 2, 3]));
        await peer.WriteAsync(FrameType.Headers, FrameFlags.EndHeaders | FrameFlags.EndStream, call.Id,
            ScriptedHttp2Peer.Block(("grpc-status", "0")));
        Assert.Equal([1, 2, 3], await call.Response.WaitAsync(Timeout));
    }

    [Fact]
    public async Task A_large_frame_size_puts_a_whole_batch_in_one_frame()
    {
        await using var peer = new ScriptedHttp2Peer();
        var connecting = Connect(peer);
        await peer.AcceptAsync((SettingId.MaxFrameSize, 1 << 20), (SettingId.InitialWindowSize, 16 << 20));
        using var connection = await connecting;
        await peer.WindowUpdateAsync(0, 16 << 20);
        var call = connection.StartCall("/svc/Method", []);
        await peer.ReadUntilAsync(FrameType.Headers);
        // Wait until the connection window update is in: the client takes what credit there is and would split.
        await Task.Delay(100);
        var message = new byte[(1 << 20) - 1000];
        await WriteOnAThread(call, message).WaitAsync(Timeout);
        var data = await peer.ReadUntilAsync(FrameType.Data);
        Assert.Equal(message.Length, data.Header.Length);
    }

    [Fact]
    public async Task A_status_in_the_trailers_fails_the_call_with_that_status()
    {
        await using var peer = new ScriptedHttp2Peer();
        var (connection, call) = await CallAsync(peer);
        using var _ = connection;
        await peer.WriteAsync(FrameType.Headers, FrameFlags.EndHeaders | FrameFlags.EndStream, call.Id,
            [0x88, .. ScriptedHttp2Peer.Block(("grpc-status", "9"), ("grpc-message", "busy%20with%20m0"))]);
        var failure = await Assert.ThrowsAsync<RpcException>(() => call.Response.WaitAsync(Timeout));
        Assert.Equal(StatusCode.FailedPrecondition, failure.StatusCode);
        Assert.Equal("busy with m0", failure.Status.Detail);
        // and a writer learns it too, instead of sending into a finished call
        Assert.Equal(StatusCode.FailedPrecondition,
            (await Assert.ThrowsAsync<RpcException>(() => WriteOnAThread(call, new byte[10]))).StatusCode);
    }

    [Fact]
    public async Task A_Huffman_coded_header_fails_the_connection_saying_so()
    {
        await using var peer = new ScriptedHttp2Peer();
        var (connection, call) = await CallAsync(peer);
        using var _ = connection;
        await peer.WriteAsync(FrameType.Headers, FrameFlags.EndHeaders | FrameFlags.EndStream, call.Id,
            [0x88, 0x00, 0x81, 0x1f, 0x01, (byte)'0']);
        var failure = await Assert.ThrowsAsync<RpcException>(() => call.Response.WaitAsync(Timeout));
        Assert.Contains("Huffman", failure.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_dropped_connection_wakes_a_writer_waiting_for_credit()
    {
        await using var peer = new ScriptedHttp2Peer();
        var connecting = Connect(peer);
        await peer.AcceptAsync((SettingId.InitialWindowSize, 1000));
        using var connection = await connecting;
        var call = connection.StartCall("/svc/Method", []);
        var writing = WriteOnAThread(call, new byte[100_000]);
        await peer.ReadUntilAsync(FrameType.Data); // the first 1000 bytes; then it waits for credit that never comes
        peer.Close();
        var failure = await Assert.ThrowsAsync<RpcException>(() => writing.WaitAsync(Timeout));
        Assert.Equal(StatusCode.Unavailable, failure.StatusCode);
        Assert.Contains("closed the connection", failure.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task GOAWAY_with_an_error_fails_every_call_and_pings_are_answered()
    {
        await using var peer = new ScriptedHttp2Peer();
        var connecting = Connect(peer);
        await peer.AcceptAsync();
        using var connection = await connecting;
        var call = connection.StartCall("/svc/Method", []);
        await peer.WriteAsync(FrameType.Ping, FrameFlags.None, 0, [1, 2, 3, 4, 5, 6, 7, 8]);
        var ping = await peer.ReadUntilAsync(FrameType.Ping);
        Assert.True(ping.Header.Has(FrameFlags.Ack));
        Assert.Equal([1, 2, 3, 4, 5, 6, 7, 8], ping.Payload);

        var goAway = new byte[8 + 4];
        BinaryPrimitives.WriteUInt32BigEndian(goAway.AsSpan(4), 11); // ENHANCE_YOUR_CALM
        "calm"u8.CopyTo(goAway.AsSpan(8));
        await peer.WriteAsync(FrameType.GoAway, FrameFlags.None, 0, goAway);
        var failure = await Assert.ThrowsAsync<RpcException>(() => call.Response.WaitAsync(Timeout));
        Assert.Equal(StatusCode.Unavailable, failure.StatusCode);
        Assert.Contains("GOAWAY ENHANCE_YOUR_CALM: calm", failure.Status.Detail, StringComparison.Ordinal);
        Assert.Throws<RpcException>(() => connection.StartCall("/svc/Method", []));
    }

    [Fact]
    public async Task Nothing_listening_is_a_clear_unavailable()
    {
        var address = new ScriptedHttp2Peer();
        var target = address.Address;
        await address.DisposeAsync();
        var failure = await Assert.ThrowsAsync<RpcException>(() =>
            PageStreamConnection.ConnectAsync(target, TransportSecurity.None, Timeout, CancellationToken.None));
        Assert.Equal(StatusCode.Unavailable, failure.StatusCode);
        Assert.Contains(target.ToString(), failure.Status.Detail, StringComparison.Ordinal);
    }
}
