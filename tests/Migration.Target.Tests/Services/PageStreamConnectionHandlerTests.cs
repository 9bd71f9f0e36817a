using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Grpc.Core;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Shared.Protocol;
using Migration.Shared.Transport;
using Migration.Shared.Transport.Http2;
using Migration.Target.Receiving;
using Migration.Target.Services;
using Migration.Target.Tests.Receiving;

namespace Migration.Target.Tests.Services;

/// <summary>
/// The target's own HTTP/2 server for page-stream connections: against the source's real client over loopback, and
/// against hand-written frames for everything a client can get wrong; and the sniffing that decides which connections
/// are its (only those whose first SETTINGS carry the marker; grpc-dotnet's client's go on to Kestrel).
/// </summary>
public sealed class PageStreamConnectionHandlerTests : IDisposable
{
    private const int Page = PageGeometry.PageSize;
    private const string Token = "0123456789abcdef0123456789";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    private readonly IncomingMigrations _target = Targets.New(new ScriptedSwitchover());
    private readonly CallerCredentials _owner;

    public PageStreamConnectionHandlerTests() => _owner = _target.BeginAs("m1");

    public void Dispose() => _target.Dispose();

    private PageStreamConnectionHandler Handler(TargetOptions? options = null) =>
        new(_target, options ?? TargetOptions.Defaults, NullLogger<PageStreamConnectionHandler>.Instance);

    private KeyValuePair<string, string>[] Metadata => [
        KeyValuePair.Create(WireNames.MigrationIdHeader, "m1"),
        KeyValuePair.Create(WireNames.MigrationKeyHeader, _owner.Key!)];

    /// <summary>A gRPC message (prefix included) of raw pages filled with <paramref name="fill"/>.</summary>
    private static byte[] Batch(long firstPfn, int pages, byte fill, byte compressed = 0)
    {
        long[] pfns = [.. Enumerable.Range(0, pages).Select(i => firstPfn + i)];
        byte[] kinds = [.. Enumerable.Repeat((byte)PageEncodingKind.Raw, pages)];
        int[] lengths = [.. Enumerable.Repeat(Page, pages)];
        var payload = new byte[pages * Page];
        Array.Fill(payload, fill);
        var layout = PageBatchWire.Measure(1, pfns, kinds, lengths, payload.Length);
        var message = new byte[5 + layout.MessageLength];
        message[0] = compressed;
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(1), (uint)layout.MessageLength);
        PageBatchWire.Write(message.AsSpan(5), layout, 1, pfns, kinds, lengths, payload);
        return message;
    }

    private IncomingMigration Migration() => _target.RequireReceiving("m1", _owner);

    private string FailureReason()
    {
        Assert.Equal(TargetState.Failed, _target.State);
        return _target.Status(new StatusRequest { MigrationId = "m1" }, _owner).Error;
    }

    private static unsafe void Write(PageStreamCall call, byte[] message)
    {
        fixed (byte* start = message)
        {
            IoVector[] pieces = [new IoVector(start, message.Length)];
            call.WriteMessage(pieces, message.Length, new IoVector[SocketGather.MaxVectors],
                new byte[FrameHeader.Size * 64]);
        }
    }

    [Fact]
    public async Task The_sources_client_streams_batches_and_a_rehearsal_stream_beside_them()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var handler = Handler();
        var serving = Task.Run(async () =>
        {
            using var socket = await listener.AcceptSocketAsync();
            await using var stream = new NetworkStream(socket, ownsSocket: false);
            var pipe = new DuplexPipe(PipeReader.Create(stream), PipeWriter.Create(stream));
            // The connection's first bytes are the source's: the marker is there
            var first = await pipe.Input.ReadAtLeastAsync(24 + 9 + 18);
            Assert.True(PageStreamConnectionHandler.IsPageStreamConnection(first.Buffer));
            pipe.Input.AdvanceTo(first.Buffer.Start);
            await handler.ServeAsync(pipe, 2 << 20, CancellationToken.None);
        });

        var uri = new Uri($"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}");
        using (var connection = await PageStreamConnection.ConnectAsync(uri, TransportSecurity.None, Timeout,
            CancellationToken.None))
        {
            Assert.Equal(handler.MaxFrameSize, connection.MaxFrameSize); // a whole batch fits one frame
            var call = connection.StartCall(PageStreamEndpoint.Path, Metadata);
            // Enough to need credit granted back: 3 x 16 MiB of stream window
            await Task.Run(() =>
            {
                for (int i = 0; i < 200; i++)
                {
                    Write(call, Batch(i % 4 * 256, 256, (byte)(i + 1)));
                }
            }).WaitAsync(Timeout);

            var rehearsal = connection.StartCall(PageStreamEndpoint.Path, Metadata);
            rehearsal.CompleteRequest();
            var empty = PageStreamSummary.Parser.ParseFrom(await rehearsal.Response.WaitAsync(Timeout));
            Assert.Equal(0UL, empty.Batches);

            call.CompleteRequest();
            var summary = PageStreamSummary.Parser.ParseFrom(await call.Response.WaitAsync(Timeout));
            Assert.Equal(200UL, summary.Batches);
            Assert.Equal(200UL * 256, summary.Pages);
            Assert.Equal(200UL * 256 * Page, summary.Bytes);
        }

        await serving.WaitAsync(Timeout);
        var migration = Migration();
        Assert.Equal(0, migration.OpenStreams);
        Assert.Equal(200, migration.Ram.Page(3 * 256)[0]); // the last batch on pfns 768.. was the 200th
    }

    [Fact]
    public async Task A_message_split_across_padded_frames_is_assembled_and_applied()
    {
        await using var peer = new RawPeer(Handler(), wholeFrameBytes: 16 << 10);
        await peer.StartAsync();
        await peer.HeadersAsync(1, PageStreamEndpoint.Path, Metadata);
        byte[] message = Batch(5, 40, 0x5A); // 160 KiB in frames of various sizes, two over the whole-frame limit
        int[] cuts = [3, 4000, 100_000, message.Length];
        int at = 0;
        foreach (int cut in cuts)
        {
            // the larger frames arrive in two writes: consumed piecewise, as they come
            await peer.DataAsync(1, message.AsMemory(at, cut - at), endStream: false, pad: 7, splitAt: 20_000);
            at = cut;
        }

        await peer.DataAsync(1, ReadOnlyMemory<byte>.Empty, endStream: true);
        var (status, _, summary) = await peer.ResponseAsync(1);
        Assert.Equal(StatusCode.OK, status);
        Assert.Equal(40UL, PageStreamSummary.Parser.ParseFrom(summary).Pages);
        Assert.Equal(0x5A, Migration().Ram.Page(44)[Page - 1]);
    }

    [Theory]
    [InlineData("bad path")]
    [InlineData("no token")]
    [InlineData("wrong token")]
    [InlineData("wrong key")]
    public async Task A_call_that_may_not_stream_is_refused_and_the_migration_goes_on(string fault)
    {
        var options = TargetOptions.Defaults with { Token = Token };
        await using var peer = new RawPeer(Handler(options));
        await peer.StartAsync();
        var headers = fault switch
        {
            "no token" => Metadata,
            "wrong token" => [.. Metadata, KeyValuePair.Create("authorization", $"Bearer {Token}x")],
            "wrong key" => [KeyValuePair.Create(WireNames.MigrationIdHeader, "m1"),
                KeyValuePair.Create(WireNames.MigrationKeyHeader, new string('0', 32)),
                KeyValuePair.Create("authorization", $"Bearer {Token}")],
            _ => [.. Metadata, KeyValuePair.Create("authorization", $"Bearer {Token}")],
        };
        await peer.HeadersAsync(1, fault == "bad path" ? "/migration.v1.Migration/Begin" : PageStreamEndpoint.Path,
            headers);
        var (status, detail, _) = await peer.ResponseAsync(1);
        var expected = fault switch
        {
            "bad path" => StatusCode.Unimplemented,
            _ => StatusCode.Unauthenticated,
        };
        Assert.Equal(expected, status);
        if (fault is "no token" or "wrong token")
        {
            Assert.Equal("this target needs its token (authorization: Bearer TOKEN)", detail);
        }

        Assert.Equal(TargetState.Receiving, _target.State);
        Assert.Equal(0, Migration().OpenStreams);
    }

    [Theory]
    [InlineData("malformed", StatusCode.InvalidArgument, "malformed page batch")]
    [InlineData("compressed", StatusCode.Unimplemented, "compressed page batches are not supported")]
    [InlineData("oversized", StatusCode.ResourceExhausted, "exceeds the limit of 8388608 bytes")]
    [InlineData("ends inside", StatusCode.InvalidArgument, "the stream ended inside a message (1005 bytes left over)")]
    public async Task A_bad_message_fails_the_migration_with_its_status(string fault, StatusCode code, string reason)
    {
        await using var peer = new RawPeer(Handler());
        await peer.StartAsync();
        await peer.HeadersAsync(1, PageStreamEndpoint.Path, Metadata);
        byte[] message = Batch(0, 1, 1, compressed: fault == "compressed" ? (byte)1 : (byte)0);
        switch (fault)
        {
            case "malformed":
                BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(1), 7);
                message = message[..12];
                break;
            case "oversized":
                BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(1), (8 << 20) + 1);
                message = message[..5];
                break;
            case "ends inside":
                message = message[..1005];
                break;
        }

        await peer.DataAsync(1, message, endStream: fault == "ends inside");
        var (status, detail, _) = await peer.ResponseAsync(1);
        Assert.Equal(code, status);
        Assert.Contains(reason, detail, StringComparison.Ordinal);
        Assert.Contains(reason, FailureReason(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_stream_reset_or_a_connection_dropped_mid_message_fails_the_migration(bool drop)
    {
        await using var peer = new RawPeer(Handler());
        await peer.StartAsync();
        await peer.HeadersAsync(1, PageStreamEndpoint.Path, Metadata);
        byte[] message = Batch(0, 4, 1);
        await peer.DataAsync(1, message.AsMemory(0, 6000), endStream: false);
        if (drop)
        {
            await peer.DropAsync();
        }
        else
        {
            var reset = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(reset, Http2ErrorCodes.Cancel);
            await peer.FrameAsync(FrameType.RstStream, FrameFlags.None, 1, reset);
        }

        await RawPeer.WaitForAsync(() => _target.State == TargetState.Failed);
        Assert.StartsWith("page stream broke: ", FailureReason(), StringComparison.Ordinal);
        Assert.Contains(drop ? "closed" : "reset the stream (CANCEL)", FailureReason(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Ping_is_answered_and_goaway_closes_the_connection_once_its_streams_end()
    {
        await using var peer = new RawPeer(Handler());
        await peer.StartAsync();
        await peer.FrameAsync(FrameType.Ping, FrameFlags.None, 0, new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 });
        var (pong, payload) = await peer.ReadUntilAsync(FrameType.Ping);
        Assert.True(pong.Has(FrameFlags.Ack));
        Assert.Equal([1, 2, 3, 4, 5, 6, 7, 8], payload);
        await peer.HeadersAsync(1, PageStreamEndpoint.Path, Metadata);
        await peer.FrameAsync(FrameType.GoAway, FrameFlags.None, 0, new byte[8]);
        await peer.DataAsync(1, Batch(0, 1, 9), endStream: true);
        var (status, _, _) = await peer.ResponseAsync(1);
        Assert.Equal(StatusCode.OK, status);
        await peer.Serving.WaitAsync(Timeout); // closed by the handler, not by the peer
        Assert.Equal(TargetState.Receiving, _target.State);
    }

    [Fact]
    public async Task Only_a_first_settings_frame_with_the_marker_claims_a_connection()
    {
        // grpc-dotnet's client (SocketsHttpHandler), as the control calls and any generated client connect
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var http = new HttpClient(new SocketsHttpHandler());
        var uri = new Uri($"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}{PageStreamEndpoint.Path}");
        using var request = new HttpRequestMessage(HttpMethod.Post, uri)
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent([0, 0, 0, 0, 0]),
        };
        using var cancel = new CancellationTokenSource(Timeout);
        var sending = http.SendAsync(request, cancel.Token);
        using var socket = await listener.AcceptSocketAsync(cancel.Token);
        await using var network = new NetworkStream(socket);
        var reader = PipeReader.Create(network);
        var start = await reader.ReadAtLeastAsync(24 + 9 + 6, cancel.Token);
        Assert.False(PageStreamConnectionHandler.IsPageStreamConnection(start.Buffer));
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sending);

        // Byte by byte, the verdict waits for the whole first frame
        byte[] marked = [.. "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8, 0, 0, 12, 4, 0, 0, 0, 0, 0,
            0, 2, 0, 0, 0, 0, 0xF0, 0xA1, 0, 0, 0, 1];
        for (int n = 1; n < marked.Length; n++)
        {
            Assert.Null(PageStreamConnectionHandler.IsPageStreamConnection(new ReadOnlySequence<byte>(marked, 0, n)));
        }

        Assert.True(PageStreamConnectionHandler.IsPageStreamConnection(new ReadOnlySequence<byte>(marked)));
        marked[^1] = 2;
        Assert.False(PageStreamConnectionHandler.IsPageStreamConnection(new ReadOnlySequence<byte>(marked)));
        Assert.False(PageStreamConnectionHandler.IsPageStreamConnection(new ReadOnlySequence<byte>([0x16, 3, 1])));
    }

    [Fact]
    public async Task Another_connection_goes_on_to_kestrel_with_its_bytes_unread()
    {
        var handler = Handler();
        var toServer = new Pipe();
        var connection = new TestConnection(new DuplexPipe(toServer.Reader, new Pipe().Writer));
        // A client whose preface arrives in two pieces and whose whole call is in them
        byte[] start = [.. "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8, 0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0];
        await toServer.Writer.WriteAsync(start.AsMemory(0, 10));
        var seen = new TaskCompletionSource<byte[]>();
        var middleware = handler.OnConnectionAsync(connection, async kestrel =>
        {
            // Kestrel's first read: at once, everything
            var read = kestrel.Transport.Input.ReadAsync();
            Assert.True(read.IsCompleted, "the next middleware's first read had to wait");
            seen.SetResult((await read).Buffer.ToArray());
        });
        await Task.Delay(50);
        Assert.False(seen.Task.IsCompleted);
        await toServer.Writer.WriteAsync(start.AsMemory(10));
        await middleware.WaitAsync(Timeout);
        Assert.Equal(start, await seen.Task.WaitAsync(Timeout));
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input => input;

        public PipeWriter Output => output;
    }

    private sealed class TestConnection(IDuplexPipe transport) : Microsoft.AspNetCore.Connections.ConnectionContext
    {
        public override string ConnectionId { get; set; } = "test";

        public override Microsoft.AspNetCore.Http.Features.IFeatureCollection Features { get; } =
            new Microsoft.AspNetCore.Http.Features.FeatureCollection();

        public override IDictionary<object, object?> Items { get; set; } = new Dictionary<object, object?>();

        public override IDuplexPipe Transport { get; set; } = transport;
    }

    /// <summary>A client written frame by frame, over in-memory pipes, to the handler.</summary>
    private sealed class RawPeer(PageStreamConnectionHandler handler, int wholeFrameBytes = 32 << 10)
        : IAsyncDisposable
    {
        private readonly Pipe _toServer = new();
        private readonly Pipe _toClient = new();
        private readonly HpackDecoder _hpack = new();

        public Task Serving { get; private set; } = Task.CompletedTask;

        public async Task StartAsync()
        {
            Serving = handler.ServeAsync(new DuplexPipe(_toServer.Reader, _toClient.Writer), wholeFrameBytes,
                CancellationToken.None);
            byte[] start = [.. "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8, 0, 0, 6, 4, 0, 0, 0, 0, 0, 0xF0, 0xA1, 0, 0, 0,
                1];
            await _toServer.Writer.WriteAsync(start);
            var (settings, _) = await ReadUntilAsync(FrameType.Settings);
            Assert.False(settings.Has(FrameFlags.Ack));
        }

        public async Task FrameAsync(FrameType type, FrameFlags flags, int stream, ReadOnlyMemory<byte> payload,
            int splitAt = int.MaxValue)
        {
            var frame = new byte[FrameHeader.Size + payload.Length];
            FrameHeader.Write(frame, payload.Length, type, flags, stream);
            payload.CopyTo(frame.AsMemory(FrameHeader.Size));
            if (frame.Length > splitAt)
            {
                await _toServer.Writer.WriteAsync(frame.AsMemory(0, splitAt));
                await Task.Delay(50);
                await _toServer.Writer.WriteAsync(frame.AsMemory(splitAt));
                return;
            }

            await _toServer.Writer.WriteAsync(frame);
        }

        public Task HeadersAsync(int stream, string path, IEnumerable<KeyValuePair<string, string>> metadata)
        {
            var block = new List<byte>();
            Hpack.WriteIndexed(block, Hpack.MethodPost);
            Hpack.WriteIndexed(block, Hpack.SchemeHttp);
            Hpack.WriteLiteral(block, ":path", path);
            Hpack.WriteLiteral(block, "content-type", "application/grpc");
            foreach (var (name, value) in metadata)
            {
                Hpack.WriteLiteral(block, name, value);
            }

            return FrameAsync(FrameType.Headers, FrameFlags.EndHeaders, stream, block.ToArray());
        }

        public Task DataAsync(int stream, ReadOnlyMemory<byte> data, bool endStream, int pad = -1,
            int splitAt = int.MaxValue)
        {
            var flags = endStream ? FrameFlags.EndStream : FrameFlags.None;
            if (pad < 0)
            {
                return FrameAsync(FrameType.Data, flags, stream, data);
            }

            var padded = new byte[1 + data.Length + pad];
            padded[0] = (byte)pad;
            data.CopyTo(padded.AsMemory(1));
            return FrameAsync(FrameType.Data, flags | FrameFlags.Padded, stream, padded, splitAt);
        }

        public async Task DropAsync() => await _toServer.Writer.CompleteAsync();

        public async Task<(FrameHeader Header, byte[] Payload)> ReadUntilAsync(FrameType type)
        {
            while (true)
            {
                var frame = await ReadAsync();
                if (frame.Header.Type == type)
                {
                    return frame;
                }
            }
        }

        /// <summary>The response of <paramref name="stream"/>: its status, message and the one gRPC message.</summary>
        public async Task<(StatusCode Status, string Detail, byte[] Message)> ResponseAsync(int stream)
        {
            var body = new List<byte>();
            while (true)
            {
                var (header, payload) = await ReadAsync();
                if (header.StreamId != stream)
                {
                    continue;
                }

                if (header.Type == FrameType.Data)
                {
                    body.AddRange(payload);
                }
                else if (header.Type == FrameType.Headers)
                {
                    var fields = new List<KeyValuePair<string, string>>();
                    _hpack.Decode(payload, fields);
                    var map = fields.ToDictionary(f => f.Key, f => f.Value);
                    if (header.Has(FrameFlags.EndStream))
                    {
                        Assert.True(map.ContainsKey("grpc-status"), "a response ended without a gRPC status");
                        string detail = map.TryGetValue("grpc-message", out var m) ? Uri.UnescapeDataString(m) : "";
                        byte[] message = body.Count >= 5 ? [.. body.Skip(5)] : [];
                        return ((StatusCode)int.Parse(map["grpc-status"], System.Globalization.CultureInfo
                            .InvariantCulture), detail, message);
                    }
                }
            }
        }

        public async Task<(FrameHeader Header, byte[] Payload)> ReadAsync()
        {
            var reader = _toClient.Reader;
            while (true)
            {
                var result = await reader.ReadAsync().AsTask().WaitAsync(Timeout);
                var buffer = result.Buffer;
                if (buffer.Length >= FrameHeader.Size)
                {
                    var header = FrameHeader.Read(buffer.Slice(0, FrameHeader.Size).ToArray());
                    if (buffer.Length >= FrameHeader.Size + header.Length)
                    {
                        byte[] payload = buffer.Slice(FrameHeader.Size, header.Length).ToArray();
                        reader.AdvanceTo(buffer.GetPosition(FrameHeader.Size + header.Length));
                        return (header, payload);
                    }
                }

                Assert.False(result.IsCompleted, "the handler closed the connection");
                reader.AdvanceTo(buffer.Start, buffer.End);
            }
        }

        public static async Task WaitForAsync(Func<bool> condition)
        {
            var deadline = DateTime.UtcNow + Timeout;
            while (!condition())
            {
                Assert.True(DateTime.UtcNow < deadline, "timed out");
                await Task.Delay(10);
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _toServer.Writer.CompleteAsync();
            await Serving.WaitAsync(Timeout);
        }
    }
}
