using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Migration.Shared.Transport.Http2;

namespace Migration.Shared.Tests.Transport.Http2;

/// <summary>
/// The server side of one HTTP/2 connection, driven frame by frame by a test: it plays a target that behaves as the
/// test needs (small windows, small frames, an error, a broken connection) where Kestrel would not.
/// </summary>
internal sealed class ScriptedHttp2Peer : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private Socket? _socket;
    private NetworkStream? _stream;

    public ScriptedHttp2Peer() => _listener.Start();

    public Uri Address => new($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");

    public NetworkStream Stream => _stream ?? throw new InvalidOperationException("not accepted yet");

    /// <summary>Accepts the client, reads its preface, and sends <paramref name="settings"/> as its SETTINGS.</summary>
    public async Task AcceptAsync(params (SettingId Id, uint Value)[] settings)
    {
        _socket = await _listener.AcceptSocketAsync().WaitAsync(TimeSpan.FromSeconds(10));
        _stream = new NetworkStream(_socket, ownsSocket: true);
        var preface = new byte[24];
        await _stream.ReadExactlyAsync(preface).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray(), preface);
        var payload = new byte[6 * settings.Length];
        for (int i = 0; i < settings.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(6 * i), (ushort)settings[i].Id);
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(6 * i + 2), settings[i].Value);
        }

        await WriteAsync(FrameType.Settings, FrameFlags.None, 0, payload);
    }

    public async Task<(FrameHeader Header, byte[] Payload)> ReadAsync()
    {
        var header = new byte[FrameHeader.Size];
        await Stream.ReadExactlyAsync(header).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        var frame = FrameHeader.Read(header);
        var payload = new byte[frame.Length];
        await Stream.ReadExactlyAsync(payload).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        return (frame, payload);
    }

    /// <summary>Reads frames until one of <paramref name="type"/>, skipping the client's SETTINGS, ACKs and updates.</summary>
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

    public async Task WriteAsync(FrameType type, FrameFlags flags, int stream, byte[] payload)
    {
        var frame = new byte[FrameHeader.Size + payload.Length];
        FrameHeader.Write(frame, payload.Length, type, flags, stream);
        payload.CopyTo(frame, FrameHeader.Size);
        await Stream.WriteAsync(frame);
    }

    public Task WindowUpdateAsync(int stream, int increment)
    {
        var payload = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(payload, increment);
        return WriteAsync(FrameType.WindowUpdate, FrameFlags.None, stream, payload);
    }

    /// <summary>A header block of literal fields (never indexed, no Huffman), as Kestrel writes them.</summary>
    public static byte[] Block(params (string Name, string Value)[] fields)
    {
        var block = new List<byte>();
        foreach (var (name, value) in fields)
        {
            Hpack.WriteLiteral(block, name, value);
        }

        return [.. block];
    }

    /// <summary>A gRPC message: the 5-byte prefix and <paramref name="message"/>.</summary>
    public static byte[] GrpcMessage(byte[] message)
    {
        var framed = new byte[5 + message.Length];
        BinaryPrimitives.WriteUInt32BigEndian(framed.AsSpan(1), (uint)message.Length);
        message.CopyTo(framed, 5);
        return framed;
    }

    public void Close() => _socket?.Close();

    public async ValueTask DisposeAsync()
    {
        if (_stream is not null)
        {
            await _stream.DisposeAsync();
        }

        _listener.Stop();
        _listener.Dispose();
    }
}
