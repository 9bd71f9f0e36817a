using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
using Migration.Shared.Hosting;
using Migration.Shared.Transport.Http2;
using Migration.Target.Receiving;

namespace Migration.Target.Services;

/// <summary>
/// Serves the connections our source marks as carrying page streams only (<see cref="SettingId.PageStreamsOnly"/> in
/// its first SETTINGS frame) straight off Kestrel's transport, without Kestrel's HTTP/2 layer: each batch is parsed
/// where the socket put it and its pages decoded into guest RAM, the only copy in user space. Kestrel's HTTP/2 copied
/// every byte twice before the endpoint saw it (its connection's input pipe, then the request body's pipe) and moved
/// each batch across three or four loops and threads; here one loop reads, applies and answers.
/// </summary>
/// <remarks>
/// <para>Installed in front of every cleartext endpoint as connection middleware (<see cref="OnConnectionAsync"/>;
/// never on an https:// target, where it would run before TLS). It looks at the first bytes without consuming them:
/// the HTTP/2 preface and a first SETTINGS frame that carries the marker make the connection ours; anything else goes
/// on to Kestrel with every byte still unread, so control calls, the management API and any generated gRPC client are
/// served as ever.</para>
/// <para>HTTP/2 here is what a page stream needs, as RFC 9113 has it: SETTINGS both ways, PING answered, GOAWAY and
/// RST_STREAM honoured, flow control on what it receives (a 32 MiB connection window, 16 MiB per stream, credit granted
/// as batches are applied), HEADERS decoded with <see cref="HpackDecoder"/>, any number of streams. Frames may be as
/// large as a whole batch, so a batch normally arrives as one DATA frame and is parsed where it lies; a message split
/// across frames is assembled (copied) first. What it sends is tiny (a summary and trailers per stream), so it ignores
/// the client's flow-control windows, which its own client keeps far above that.</para>
/// <para>Each stream is served as <see cref="PageStreamEndpoint"/> serves one (<see cref="PageStreamReceiver"/>): the
/// token, the migration and its key, the same limits, statuses and failures.</para>
/// </remarks>
internal sealed partial class PageStreamConnectionHandler(
    IncomingMigrations migrations, TargetOptions options, ILogger<PageStreamConnectionHandler> log)
{
    /// <summary>The receive windows: a few batches in flight per stream, as Kestrel's were configured.</summary>
    public const int StreamWindow = 16 << 20;

    public const int ConnectionWindow = 32 << 20;

    /// <summary>
    /// What the transport must be able to hold unread (Kestrel's socket transport: <c>MaxReadBufferSize</c>). The
    /// loop waits for a whole frame while frames are at most half of it, so it parses a batch where it lies; a larger
    /// frame is consumed as it arrives, or the transport would stop reading before the frame was whole.
    /// </summary>
    public const int TransportBufferBytes = 4 << 20;

    private const int DefaultWindow = 65_535;

    private readonly IncomingMigrations _migrations = migrations;
    private readonly TargetOptions _options = options;
    private readonly ILogger _log = log;
    private readonly ServerSecurity _security = options.Security;

    /// <summary>The frames we take: a whole batch (its prefix included) in one, within what HTTP/2 allows.</summary>
    public int MaxFrameSize => (int)Math.Clamp((long)_options.MaxPageMessageBytes + PageStreamReceiver.PrefixLength,
        FrameHeader.MinMaxFrameSize, FrameHeader.MaxMaxFrameSize);

    /// <summary>
    /// True when <paramref name="start"/> (a connection's first bytes) opens a marked page-stream connection, false
    /// when it cannot, null when more bytes are needed to tell.
    /// </summary>
    public static bool? IsPageStreamConnection(ReadOnlySequence<byte> start)
    {
        var preface = FrameHeader.ClientPreface;
        Span<byte> head = stackalloc byte[preface.Length + FrameHeader.Size];
        int have = (int)Math.Min(start.Length, preface.Length);
        start.Slice(0, have).CopyTo(head);
        if (!head[..have].SequenceEqual(preface[..have]))
        {
            return false;
        }

        if (start.Length < head.Length)
        {
            return null;
        }

        start.Slice(preface.Length, FrameHeader.Size).CopyTo(head[preface.Length..]);
        var frame = FrameHeader.Read(head[preface.Length..]);
        if (frame.Type != FrameType.Settings || frame.Has(FrameFlags.Ack) || frame.StreamId != 0
            || frame.Length % 6 != 0 || frame.Length > FrameHeader.MinMaxFrameSize)
        {
            return false; // not the SETTINGS frame a client must send first: Kestrel says what is wrong
        }

        if (start.Length < head.Length + frame.Length)
        {
            return null;
        }

        Span<byte> setting = stackalloc byte[6];
        var settings = start.Slice(head.Length, frame.Length);
        for (long at = 0; at < frame.Length; at += 6)
        {
            settings.Slice(at, 6).CopyTo(setting);
            if (BinaryPrimitives.ReadUInt16BigEndian(setting) == (ushort)SettingId.PageStreamsOnly
                && BinaryPrimitives.ReadUInt32BigEndian(setting[2..]) == 1)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// The connection middleware: serves a marked page-stream connection here, hands any other to
    /// <paramref name="next"/> (Kestrel) with its first bytes unconsumed and unexamined, so Kestrel's first read
    /// returns them at once (marked examined, that read would wait for more, and a client that had sent its whole
    /// small call would wait forever).
    /// </summary>
    public async Task OnConnectionAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(next);
        var input = connection.Transport.Input;
        bool ours;
        try
        {
            while (true)
            {
                var result = await input.ReadAsync(connection.ConnectionClosed).ConfigureAwait(false);
                var buffer = result.Buffer;
                bool? verdict = IsPageStreamConnection(buffer);
                if (verdict is null && !result.IsCompleted && !result.IsCanceled)
                {
                    input.AdvanceTo(buffer.Start, buffer.End);
                    continue;
                }

                input.AdvanceTo(buffer.Start, buffer.Start);
                ours = verdict == true;
                break;
            }
        }
        catch (Exception ex) when (PageStreamReceiver.IsBrokenStream(ex))
        {
            return; // gone before it said anything
        }

        if (!ours)
        {
            await next(connection).ConfigureAwait(false);
            return;
        }

        await ServeAsync(connection.Transport, TransportBufferBytes / 2, connection.ConnectionClosed)
            .ConfigureAwait(false);
    }

    /// <summary>
    /// Serves one connection whose first bytes are the preface, until the source closes it (or says GOAWAY and its
    /// streams end). Frames of at most <paramref name="wholeFrameBytes"/> are waited for whole; see
    /// <see cref="TransportBufferBytes"/>.
    /// </summary>
    public Task ServeAsync(IDuplexPipe transport, int wholeFrameBytes, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(transport);
        return new Connection(this, transport, wholeFrameBytes).RunAsync(ct);
    }

    /// <summary>A violation of HTTP/2 that ends the connection: GOAWAY with <see cref="Code"/>.</summary>
    private sealed class ConnectionError(uint code, string message) : Exception(message)
    {
        public uint Code => code;
    }
}
