using System.Buffers.Binary;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Grpc.Core;

namespace Migration.Shared.Transport.Http2;

/// <summary>
/// The client side of one HTTP/2 connection that carries page streams: gRPC client-streaming calls whose messages are
/// written as DATA frames as large as the target allows, gathered straight from guest RAM in one system call
/// (<see cref="SocketGather"/>), where .NET's HTTP/2 client copies each message twice and sends it 16 KiB at a time.
/// </summary>
/// <remarks>
/// <para>It speaks HTTP/2 as RFC 9113 has it, for what a client of our target needs: SETTINGS both ways, flow control
/// for what it sends (connection and stream windows, waited for on the writer's own thread), PING answered, GOAWAY and
/// RST_STREAM honoured, and responses read with a full HPACK decoder (<see cref="HpackDecoder"/>). It never sends
/// PING, PRIORITY or compressed headers, and it refuses server push.</para>
/// <para>Threads: each call's messages are written by one thread that blocks while it writes; a reader task handles
/// what the target sends and never waits for the write lock (its SETTINGS, PING and WINDOW_UPDATE answers are queued
/// and sent by whoever holds the lock next, <see cref="SendControl"/>). Writes are whole frames under one lock, so
/// frames of different calls never interleave.</para>
/// <para>Every failure reaches callers as an <see cref="RpcException"/>, as grpc-dotnet reports one: a status from
/// the target as it sent it, a broken connection as <see cref="StatusCode.Unavailable"/>.</para>
/// </remarks>
internal sealed class PageStreamConnection : IDisposable
{
    /// <summary>What the target may send before we acknowledge it: summaries and trailers are a few hundred bytes.</summary>
    private const int ReceiveWindow = 1 << 20;

    /// <summary>HTTP/2's initial windows before SETTINGS say otherwise.</summary>
    private const int DefaultWindow = 65_535;

    private readonly Socket _socket;
    private readonly SslStream? _tls;
    private readonly Stream _input;
    private readonly string _authority;
    private readonly bool _https;

    private readonly Lock _writeLock = new();
    private readonly Lock _controlLock = new();
    private readonly List<byte> _pendingControl = [];
    private byte[] _tlsStaging = [];

    // Under _flow: the windows, the calls, the connection's fate. Writers waiting for credit wait on it.
    private readonly object _flow = new();
    private readonly Dictionary<int, PageStreamCall> _calls = [];
    private long _connectionWindow = DefaultWindow;
    private int _initialStreamWindow = DefaultWindow;
    private int _maxFrameSize = FrameHeader.MinMaxFrameSize;
    private int _nextStreamId = 1;
    private int _goAwayLastStream = int.MaxValue;
    private RpcException? _failure;

    private readonly HpackDecoder _hpack = new();
    private readonly TaskCompletionSource _settingsReceived = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task _reader = Task.CompletedTask;
    private int _unacknowledged; // DATA bytes received since the last connection WINDOW_UPDATE
    private volatile bool _closed;

    private PageStreamConnection(Socket socket, SslStream? tls, Stream input, Uri target)
    {
        _socket = socket;
        _tls = tls;
        _input = input;
        _authority = $"{target.Host}:{target.Port}";
        _https = target.Scheme == Uri.UriSchemeHttps;
    }

    /// <summary>The largest DATA payload the target takes in one frame (its SETTINGS_MAX_FRAME_SIZE).</summary>
    public int MaxFrameSize
    {
        get
        {
            lock (_flow)
            {
                return _maxFrameSize;
            }
        }
    }

    /// <summary>
    /// Connects, negotiates TLS (ALPN h2) for https://, exchanges SETTINGS and returns once the target's have arrived,
    /// so the first message goes out in frames of the size the target allows.
    /// </summary>
    public static async Task<PageStreamConnection> ConnectAsync(Uri target, TransportSecurity security,
        TimeSpan timeout, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(security);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
        deadline.CancelAfter(timeout);
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        PageStreamConnection? connection = null;
        try
        {
            await socket.ConnectAsync(target.IdnHost, target.Port, deadline.Token).ConfigureAwait(false);
            Stream input = new NetworkStream(socket, ownsSocket: false);
            SslStream? tls = null;
            if (target.Scheme == Uri.UriSchemeHttps)
            {
                var options = security.ClientTls();
                options.TargetHost = target.IdnHost;
                options.ApplicationProtocols = [SslApplicationProtocol.Http2];
                tls = new SslStream(input, leaveInnerStreamOpen: false);
                input = tls;
                await tls.AuthenticateAsClientAsync(options, deadline.Token).ConfigureAwait(false);
            }

            connection = new PageStreamConnection(socket, tls, input, target);
            connection.Start();
            await connection._settingsReceived.Task.WaitAsync(deadline.Token).ConfigureAwait(false);
            return connection;
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            connection?.Dispose();
            socket.Dispose();
            string detail = ex switch
            {
                OperationCanceledException => $"no HTTP/2 connection to {target} within {timeout.TotalSeconds:0.#} s",
                RpcException rpc => rpc.Status.Detail,
                _ => $"cannot open a page stream connection to {target}: {ex.Message}",
            };
            throw new RpcException(new Status(StatusCode.Unavailable, detail, ex is RpcException r
                ? r.Status.DebugException : ex));
        }
    }

    /// <summary>Starts a call: HEADERS for <paramref name="path"/> with <paramref name="metadata"/> (lowercase names).</summary>
    public PageStreamCall StartCall(string path, IEnumerable<KeyValuePair<string, string>> metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        var block = new List<byte>(256);
        Hpack.WriteIndexed(block, Hpack.MethodPost);
        Hpack.WriteIndexed(block, _https ? Hpack.SchemeHttps : Hpack.SchemeHttp);
        Hpack.WriteLiteral(block, ":path", path);
        Hpack.WriteLiteral(block, ":authority", _authority);
        Hpack.WriteLiteral(block, "content-type", "application/grpc");
        Hpack.WriteLiteral(block, "te", "trailers");
        foreach (var (name, value) in metadata)
        {
            Hpack.WriteLiteral(block, name, value);
        }

        if (block.Count > FrameHeader.MinMaxFrameSize)
        {
            throw new ArgumentException($"the call's headers take {block.Count} bytes; at most 16384 fit one frame",
                nameof(metadata));
        }

        Span<byte> frame = stackalloc byte[FrameHeader.Size + block.Count];
        CollectionsMarshal.AsSpan(block).CopyTo(frame[FrameHeader.Size..]);
        PageStreamCall call;
        EnterWrite();
        try
        {
            lock (_flow)
            {
                ThrowIfFailed();
                if (_nextStreamId > _goAwayLastStream)
                {
                    throw new RpcException(new Status(StatusCode.Unavailable,
                        "the target is closing this connection (GOAWAY): it takes no new page streams on it"));
                }

                call = new PageStreamCall(this, _nextStreamId, _initialStreamWindow);
                _nextStreamId += 2;
                _calls.Add(call.Id, call);
            }

            FrameHeader.Write(frame, block.Count, FrameType.Headers, FrameFlags.EndHeaders, call.Id);
            WriteLocked(frame);
        }
        finally
        {
            ExitWrite();
        }

        return call;
    }

    /// <summary>
    /// Writes one gRPC message of <paramref name="length"/> bytes, given as <paramref name="message"/>'s pieces (which
    /// it consumes), as DATA frames of the target's maximum size, waiting for flow-control credit as it goes.
    /// </summary>
    internal unsafe void WriteMessage(PageStreamCall call, Span<IoVector> message, int length, IoVector[] scratch,
        byte[] frameHeaders)
    {
        int piece = 0;
        int sent = 0;
        while (sent < length)
        {
            int credit = TakeCredit(call, length - sent);
            int frameSize = MaxFrameSize;
            int frames = 0;
            int vectors = 0;
            fixed (byte* headers = frameHeaders)
            {
                // Frame by frame: a header, then the message's next bytes, piece by piece.
                int framed = 0;
                while (framed < credit && (frames + 1) * FrameHeader.Size <= frameHeaders.Length
                    && vectors + 2 <= scratch.Length)
                {
                    int frameLength = Math.Min(frameSize, credit - framed);
                    byte* header = headers + frames * FrameHeader.Size;
                    scratch[vectors++] = new IoVector(header, FrameHeader.Size);
                    int left = frameLength;
                    while (left > 0 && vectors < scratch.Length)
                    {
                        ref var source = ref message[piece];
                        int take = (int)Math.Min((nuint)left, source.Length);
                        scratch[vectors++] = new IoVector(source.Base, take);
                        source.Base += take;
                        source.Length -= (nuint)take;
                        left -= take;
                        if (source.Length == 0)
                        {
                            piece++;
                        }
                    }

                    frameLength -= left; // short only when the scratch ran out of vectors
                    FrameHeader.Write(new Span<byte>(header, FrameHeader.Size), frameLength, FrameType.Data,
                        FrameFlags.None, call.Id);
                    framed += frameLength;
                    frames++;
                }

                if (framed < credit)
                {
                    ReturnCredit(call, credit - framed);
                }

                EnterWrite();
                try
                {
                    call.ThrowIfOver();
                    WriteGatheredLocked(scratch.AsSpan(0, vectors));
                }
                finally
                {
                    ExitWrite();
                }

                sent += framed;
            }
        }
    }

    /// <summary>Ends the call's request side: an empty DATA frame with END_STREAM.</summary>
    internal void SendEndStream(PageStreamCall call)
    {
        Span<byte> frame = stackalloc byte[FrameHeader.Size];
        FrameHeader.Write(frame, 0, FrameType.Data, FrameFlags.EndStream, call.Id);
        EnterWrite();
        try
        {
            ThrowIfFailed();
            WriteLocked(frame);
        }
        finally
        {
            ExitWrite();
        }
    }

    /// <summary>Tells the target a call is abandoned (RST_STREAM CANCEL), if the connection still stands.</summary>
    internal void Reset(PageStreamCall call)
    {
        Span<byte> frame = stackalloc byte[FrameHeader.Size + 4];
        FrameHeader.Write(frame, 4, FrameType.RstStream, FrameFlags.None, call.Id);
        BinaryPrimitives.WriteUInt32BigEndian(frame[FrameHeader.Size..], Http2ErrorCodes.Cancel);
        SendControl(frame);
    }

    internal void Forget(PageStreamCall call)
    {
        lock (_flow)
        {
            _calls.Remove(call.Id);
        }
    }

    /// <summary>
    /// Fails the connection and every call on it with <paramref name="reason"/>, and shuts the socket, which wakes a
    /// writer waiting for room or credit. Idempotent: the first reason stands.
    /// </summary>
    public void Abort(RpcException reason)
    {
        PageStreamCall[] calls;
        lock (_flow)
        {
            if (_failure is not null)
            {
                return;
            }

            _failure = reason;
            calls = [.. _calls.Values];
            Monitor.PulseAll(_flow);
        }

        _closed = true;
        foreach (var call in calls)
        {
            call.Fail(reason);
        }

        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // already gone
        }
    }

    public void Dispose()
    {
        bool healthy;
        lock (_flow)
        {
            healthy = _failure is null;
        }

        if (healthy && _writeLock.TryEnter())
        {
            // A polite GOAWAY (NO_ERROR) when nothing is mid-write; the target closes its side on it.
            try
            {
                Span<byte> frame = stackalloc byte[FrameHeader.Size + 8];
                FrameHeader.Write(frame, 8, FrameType.GoAway, FrameFlags.None, 0);
                BinaryPrimitives.WriteUInt32BigEndian(frame[FrameHeader.Size..], 0);
                BinaryPrimitives.WriteUInt32BigEndian(frame[(FrameHeader.Size + 4)..], Http2ErrorCodes.NoError);
                WriteLocked(frame);
            }
            catch (Exception ex) when (ex is IOException or RpcException or ObjectDisposedException)
            {
                // closing anyway
            }
            finally
            {
                _writeLock.Exit();
            }
        }

        Abort(new RpcException(new Status(StatusCode.Cancelled, "the page stream's connection was closed")));
        _tls?.Dispose();
        _input.Dispose();
        _socket.Dispose();
    }

    private void Start()
    {
        var preface = FrameHeader.ClientPreface;
        Span<byte> start = stackalloc byte[preface.Length + FrameHeader.Size + 18 + FrameHeader.Size + 4];
        preface.CopyTo(start);
        var settings = start[preface.Length..];
        FrameHeader.Write(settings, 18, FrameType.Settings, FrameFlags.None, 0);
        BinaryPrimitives.WriteUInt16BigEndian(settings[9..], (ushort)SettingId.EnablePush);
        BinaryPrimitives.WriteUInt32BigEndian(settings[11..], 0);
        BinaryPrimitives.WriteUInt16BigEndian(settings[15..], (ushort)SettingId.InitialWindowSize);
        BinaryPrimitives.WriteUInt32BigEndian(settings[17..], ReceiveWindow);
        // The marker: this connection carries page streams only (our target serves it itself; others ignore it)
        BinaryPrimitives.WriteUInt16BigEndian(settings[21..], (ushort)SettingId.PageStreamsOnly);
        BinaryPrimitives.WriteUInt32BigEndian(settings[23..], 1);
        var update = settings[(FrameHeader.Size + 18)..];
        FrameHeader.Write(update, 4, FrameType.WindowUpdate, FrameFlags.None, 0);
        BinaryPrimitives.WriteUInt32BigEndian(update[FrameHeader.Size..], ReceiveWindow - DefaultWindow);
        EnterWrite();
        try
        {
            WriteLocked(start);
        }
        finally
        {
            ExitWrite();
        }

        _reader = Task.Run(ReadLoopAsync);
    }

    private int TakeCredit(PageStreamCall call, int wanted)
    {
        lock (_flow)
        {
            while (true)
            {
                ThrowIfFailed();
                call.ThrowIfOver();
                long available = Math.Min(_connectionWindow, call.SendWindow);
                if (available > 0)
                {
                    int take = (int)Math.Min(available, wanted);
                    _connectionWindow -= take;
                    call.SendWindow -= take;
                    return take;
                }

                Monitor.Wait(_flow, TimeSpan.FromMilliseconds(100)); // woken by WINDOW_UPDATE, SETTINGS, failure
            }
        }
    }

    private void ReturnCredit(PageStreamCall call, int unused)
    {
        lock (_flow)
        {
            _connectionWindow += unused;
            call.SendWindow += unused;
        }
    }

    private void ThrowIfFailed()
    {
        if (_failure is { } failure)
        {
            throw new RpcException(failure.Status);
        }
    }

    private void EnterWrite() => _writeLock.Enter();

    /// <summary>Leaves the write lock, first sending what the reader queued meanwhile.</summary>
    private void ExitWrite()
    {
        try
        {
            FlushControlLocked();
        }
        finally
        {
            _writeLock.Exit();
        }

        // Queued after the flush, while we still held the lock: whoever gets the lock now sends it.
        while (HasPendingControl() && _writeLock.TryEnter())
        {
            try
            {
                FlushControlLocked();
            }
            finally
            {
                _writeLock.Exit();
            }
        }
    }

    /// <summary>Queues a small frame and sends it now unless a writer holds the lock (it will send it).</summary>
    private void SendControl(ReadOnlySpan<byte> frame)
    {
        lock (_controlLock)
        {
            foreach (byte b in frame)
            {
                _pendingControl.Add(b);
            }
        }

        while (HasPendingControl() && _writeLock.TryEnter())
        {
            try
            {
                FlushControlLocked();
            }
            catch (Exception ex) when (ex is IOException or RpcException or ObjectDisposedException)
            {
                // the reader sees the broken connection next
            }
            finally
            {
                _writeLock.Exit();
            }
        }
    }

    private bool HasPendingControl()
    {
        lock (_controlLock)
        {
            return _pendingControl.Count > 0;
        }
    }

    private void FlushControlLocked()
    {
        byte[] frames;
        lock (_controlLock)
        {
            if (_pendingControl.Count == 0)
            {
                return;
            }

            frames = [.. _pendingControl];
            _pendingControl.Clear();
        }

        if (!_closed)
        {
            WriteLocked(frames);
        }
    }

    private unsafe void WriteLocked(ReadOnlySpan<byte> bytes)
    {
        fixed (byte* start = bytes)
        {
            Span<IoVector> one = [new IoVector(start, bytes.Length)];
            WriteGatheredLocked(one);
        }
    }

    private unsafe void WriteGatheredLocked(Span<IoVector> vectors)
    {
        try
        {
            if (_tls is null)
            {
                SocketGather.SendAll(_socket, vectors, () => _closed);
                return;
            }

            // TLS encrypts from one buffer: gather into it first.
            nuint total = 0;
            foreach (var v in vectors)
            {
                total += v.Length;
            }

            if ((nuint)_tlsStaging.Length < total)
            {
                _tlsStaging = GC.AllocateUninitializedArray<byte>((int)total);
            }

            int at = 0;
            foreach (var v in vectors)
            {
                new ReadOnlySpan<byte>(v.Base, (int)v.Length).CopyTo(_tlsStaging.AsSpan(at));
                at += (int)v.Length;
            }

            _tls.Write(_tlsStaging, 0, at);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or SocketException)
        {
            var failure = new RpcException(new Status(StatusCode.Unavailable,
                $"the page stream's connection to the target broke: {ex.Message}", ex));
            Abort(failure);
            ThrowIfFailed();
            throw;
        }
    }

    private async Task ReadLoopAsync()
    {
        var buffer = new byte[2 * (FrameHeader.Size + FrameHeader.MinMaxFrameSize)];
        var headerBlock = new List<byte>();
        int headerStream = 0; // the stream whose header block continues in CONTINUATION frames; 0: none
        bool headerEndsStream = false;
        int start = 0, end = 0;
        try
        {
            while (true)
            {
                while (end - start < FrameHeader.Size)
                {
                    (start, end) = await FillAsync(buffer, start, end).ConfigureAwait(false);
                }

                var header = FrameHeader.Read(buffer.AsSpan(start));
                if (header.Length > FrameHeader.MinMaxFrameSize)
                {
                    throw Violation(Http2ErrorCodes.FrameSizeError,
                        $"a {header.Type} frame of {header.Length} bytes (this client takes at most 16384)");
                }

                while (end - start < FrameHeader.Size + header.Length)
                {
                    (start, end) = await FillAsync(buffer, start, end).ConfigureAwait(false);
                }

                var payload = buffer.AsSpan(start + FrameHeader.Size, header.Length);
                start += FrameHeader.Size + header.Length;
                if (headerStream != 0 && (header.Type != FrameType.Continuation || header.StreamId != headerStream))
                {
                    throw Violation(Http2ErrorCodes.ProtocolError, "a header block was interrupted");
                }

                switch (header.Type)
                {
                    case FrameType.Settings:
                        OnSettings(header, payload);
                        break;
                    case FrameType.Ping:
                        OnPing(header, payload);
                        break;
                    case FrameType.WindowUpdate:
                        OnWindowUpdate(header, payload);
                        break;
                    case FrameType.GoAway:
                        OnGoAway(payload);
                        break;
                    case FrameType.RstStream:
                        if (payload.Length != 4 || header.StreamId == 0)
                        {
                            throw Violation(Http2ErrorCodes.FrameSizeError, "a malformed RST_STREAM frame");
                        }

                        Find(header.StreamId)?.OnReset(BinaryPrimitives.ReadUInt32BigEndian(payload));
                        break;
                    case FrameType.Data:
                        OnData(header, payload);
                        break;
                    case FrameType.Headers:
                        headerBlock.Clear();
                        headerBlock.AddRange(Unpad(header, payload, header.Has(FrameFlags.Priority) ? 5 : 0));
                        headerEndsStream = header.Has(FrameFlags.EndStream);
                        headerStream = header.Has(FrameFlags.EndHeaders) ? 0 : header.StreamId;
                        if (headerStream == 0)
                        {
                            OnHeaderBlock(header.StreamId, headerBlock, headerEndsStream);
                        }

                        break;
                    case FrameType.Continuation:
                        if (headerStream == 0)
                        {
                            throw Violation(Http2ErrorCodes.ProtocolError, "a CONTINUATION frame with no header block");
                        }

                        headerBlock.AddRange(payload);
                        if (header.Has(FrameFlags.EndHeaders))
                        {
                            OnHeaderBlock(headerStream, headerBlock, headerEndsStream);
                            headerStream = 0;
                        }

                        break;
                    case FrameType.PushPromise:
                        throw Violation(Http2ErrorCodes.ProtocolError, "a PUSH_PROMISE, though push was disabled");
                    default:
                        break; // PRIORITY and unknown types are ignored (RFC 9113, 4.1, 5.5)
                }
            }
        }
        catch (Exception ex)
        {
            Abort(ex switch
            {
                RpcException rpc => rpc,
                _ when _closed => new RpcException(new Status(StatusCode.Cancelled,
                    "the page stream's connection was closed")),
                _ => new RpcException(new Status(StatusCode.Unavailable,
                    $"the page stream's connection to the target broke: {ex.Message}", ex)),
            });
        }
    }

    private async Task<(int Start, int End)> FillAsync(byte[] buffer, int start, int end)
    {
        if (start > 0 && buffer.Length - end < FrameHeader.Size + FrameHeader.MinMaxFrameSize)
        {
            Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
            (start, end) = (0, end - start);
        }

        int read = await _input.ReadAsync(buffer.AsMemory(end)).ConfigureAwait(false);
        if (read == 0)
        {
            throw new IOException("the target closed the connection");
        }

        return (start, end + read);
    }

    private void OnSettings(FrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.StreamId != 0 || (header.Has(FrameFlags.Ack) ? payload.Length != 0 : payload.Length % 6 != 0))
        {
            throw Violation(Http2ErrorCodes.FrameSizeError, "a malformed SETTINGS frame");
        }

        if (header.Has(FrameFlags.Ack))
        {
            return;
        }

        lock (_flow)
        {
            for (; payload.Length > 0; payload = payload[6..])
            {
                var id = (SettingId)BinaryPrimitives.ReadUInt16BigEndian(payload);
                uint value = BinaryPrimitives.ReadUInt32BigEndian(payload[2..]);
                switch (id)
                {
                    case SettingId.InitialWindowSize when value > int.MaxValue:
                        throw Violation(Http2ErrorCodes.FlowControlError, $"an initial window of {value}");
                    case SettingId.InitialWindowSize:
                        int delta = (int)value - _initialStreamWindow;
                        _initialStreamWindow = (int)value;
                        foreach (var call in _calls.Values)
                        {
                            call.SendWindow += delta;
                        }

                        break;
                    case SettingId.MaxFrameSize when value is < FrameHeader.MinMaxFrameSize
                        or > FrameHeader.MaxMaxFrameSize:
                        throw Violation(Http2ErrorCodes.ProtocolError, $"a maximum frame size of {value}");
                    case SettingId.MaxFrameSize:
                        _maxFrameSize = (int)value;
                        break;
                    default:
                        break; // the rest bind what we never do (push, header compression, many streams)
                }
            }

            Monitor.PulseAll(_flow);
        }

        Span<byte> ack = stackalloc byte[FrameHeader.Size];
        FrameHeader.Write(ack, 0, FrameType.Settings, FrameFlags.Ack, 0);
        SendControl(ack);
        _settingsReceived.TrySetResult();
    }

    private void OnPing(FrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.StreamId != 0 || payload.Length != 8)
        {
            throw Violation(Http2ErrorCodes.FrameSizeError, "a malformed PING frame");
        }

        if (!header.Has(FrameFlags.Ack))
        {
            Span<byte> ack = stackalloc byte[FrameHeader.Size + 8];
            FrameHeader.Write(ack, 8, FrameType.Ping, FrameFlags.Ack, 0);
            payload.CopyTo(ack[FrameHeader.Size..]);
            SendControl(ack);
        }
    }

    private void OnWindowUpdate(FrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (payload.Length != 4)
        {
            throw Violation(Http2ErrorCodes.FrameSizeError, "a malformed WINDOW_UPDATE frame");
        }

        int increment = (int)(BinaryPrimitives.ReadUInt32BigEndian(payload) & 0x7FFF_FFFF);
        if (increment == 0)
        {
            throw Violation(Http2ErrorCodes.ProtocolError, "a WINDOW_UPDATE of 0");
        }

        lock (_flow)
        {
            if (header.StreamId == 0)
            {
                _connectionWindow += increment;
                if (_connectionWindow > int.MaxValue)
                {
                    throw Violation(Http2ErrorCodes.FlowControlError, "a connection window over 2^31-1");
                }
            }
            else if (_calls.TryGetValue(header.StreamId, out var call))
            {
                call.SendWindow += increment;
            }

            Monitor.PulseAll(_flow);
        }
    }

    private void OnGoAway(ReadOnlySpan<byte> payload)
    {
        if (payload.Length < 8)
        {
            throw Violation(Http2ErrorCodes.FrameSizeError, "a malformed GOAWAY frame");
        }

        int last = (int)(BinaryPrimitives.ReadUInt32BigEndian(payload) & 0x7FFF_FFFF);
        uint code = BinaryPrimitives.ReadUInt32BigEndian(payload[4..]);
        string debug = System.Text.Encoding.UTF8.GetString(payload[8..]);
        string why = $"the target is closing the connection (GOAWAY {Http2ErrorCodes.Name(code)}" +
            (debug.Length > 0 ? $": {debug})" : ")");
        if (code != Http2ErrorCodes.NoError)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, why));
        }

        PageStreamCall[] refused;
        lock (_flow)
        {
            _goAwayLastStream = Math.Min(_goAwayLastStream, last);
            refused = [.. _calls.Values.Where(c => c.Id > last)];
        }

        foreach (var call in refused)
        {
            call.Fail(new RpcException(new Status(StatusCode.Unavailable, why)));
        }
    }

    private void OnData(FrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.StreamId == 0)
        {
            throw Violation(Http2ErrorCodes.ProtocolError, "a DATA frame on stream 0");
        }

        Find(header.StreamId)?.OnData(Unpad(header, payload, 0), header.Has(FrameFlags.EndStream));
        _unacknowledged += header.Length;
        if (_unacknowledged >= ReceiveWindow / 2)
        {
            // Streams get their own updates never: a call's response is one small summary, far inside its window.
            Span<byte> update = stackalloc byte[FrameHeader.Size + 4];
            FrameHeader.Write(update, 4, FrameType.WindowUpdate, FrameFlags.None, 0);
            BinaryPrimitives.WriteUInt32BigEndian(update[FrameHeader.Size..], (uint)_unacknowledged);
            _unacknowledged = 0;
            SendControl(update);
        }
    }

    private void OnHeaderBlock(int streamId, List<byte> block, bool endStream)
    {
        var fields = new List<KeyValuePair<string, string>>();
        try
        {
            _hpack.Decode(CollectionsMarshal.AsSpan(block), fields);
        }
        catch (HpackException ex)
        {
            throw Violation(Http2ErrorCodes.CompressionError, ex.Message); // the table state is lost for the connection
        }

        Find(streamId)?.OnHeaders(fields, endStream);
    }

    private PageStreamCall? Find(int streamId)
    {
        lock (_flow)
        {
            return _calls.GetValueOrDefault(streamId);
        }
    }

    private static ReadOnlySpan<byte> Unpad(FrameHeader header, ReadOnlySpan<byte> payload, int skip) =>
        FrameHeader.Unpad(header, ref payload, skip) is { } problem
            ? throw Violation(Http2ErrorCodes.ProtocolError, problem)
            : payload;

    private static RpcException Violation(uint code, string what) => new(new Status(StatusCode.Internal,
        $"the target broke the HTTP/2 protocol ({Http2ErrorCodes.Name(code)}): {what}"));
}
