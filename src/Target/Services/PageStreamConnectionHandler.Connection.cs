using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Grpc.Core;
using Migration.Shared.Hosting;
using Migration.Shared.Protocol;
using Migration.Shared.Transport.Http2;
using Migration.Target.Receiving;

namespace Migration.Target.Services;

internal sealed partial class PageStreamConnectionHandler
{
    /// <summary>
    /// One connection's HTTP/2 server side. Everything runs on its read loop: frames are taken off the transport's
    /// buffer, batches applied, answers written, and the buffer released only then.
    /// </summary>
    private sealed class Connection(PageStreamConnectionHandler handler, IDuplexPipe transport, int wholeFrameBytes)
    {
        private readonly PipeReader _input = transport.Input;
        private readonly PipeWriter _output = transport.Output;
        private readonly HpackDecoder _hpack = new();
        private readonly Dictionary<int, InboundStream> _streams = [];
        private readonly List<byte> _headerBlock = [];
        private readonly int _maxFrameSize = handler.MaxFrameSize;
        private int _headerStream; // the stream whose header block continues in CONTINUATION frames; 0: none
        private bool _headerEndsStream;
        private int _lastStreamId;
        private long _receiveWindow = ConnectionWindow;
        private int _unacknowledged; // DATA bytes consumed since the last connection WINDOW_UPDATE
        private bool _goingAway;
        private bool _unflushed;

        // The DATA frame being consumed: its header taken, its payload (and padding) still to come.
        private bool _inData;
        private InboundStream? _dataStream;
        private int _dataLeft;
        private int _padLeft;
        private bool _dataEndsStream;

        public async Task RunAsync(CancellationToken ct)
        {
            WriteServerPreface();
            bool preface = false;
            try
            {
                await FlushAsync(ct).ConfigureAwait(false);
                while (true)
                {
                    var result = await _input.ReadAsync(ct).ConfigureAwait(false);
                    var buffer = result.Buffer;
                    bool more = true;
                    try
                    {
                        if (!preface && buffer.Length >= FrameHeader.ClientPreface.Length)
                        {
                            if (!StartsWithPreface(buffer))
                            {
                                throw new ConnectionError(Http2ErrorCodes.ProtocolError, "no HTTP/2 preface");
                            }

                            buffer = buffer.Slice(FrameHeader.ClientPreface.Length);
                            preface = true;
                        }

                        more = !preface || Process(ref buffer);
                    }
                    finally
                    {
                        _input.AdvanceTo(buffer.Start, buffer.End);
                    }

                    await FlushAsync(ct).ConfigureAwait(false);
                    if (!more)
                    {
                        return; // GOAWAY, and every stream has ended
                    }

                    if (result.IsCompleted)
                    {
                        if (_streams.Count > 0)
                        {
                            throw new IOException("the source closed the connection");
                        }

                        return;
                    }
                }
            }
            catch (ConnectionError ex)
            {
                WriteGoAway(ex.Code, ex.Message);
                BreakAll(new IOException(
                    $"the source broke the HTTP/2 protocol ({Http2ErrorCodes.Name(ex.Code)}): {ex.Message}"));
            }
#pragma warning disable CA1031 // the connection's boundary: every stream on it fails, the target serves the next
            catch (Exception ex)
#pragma warning restore CA1031
            {
                BreakAll(ex);
            }
            finally
            {
                try
                {
                    await FlushAsync(CancellationToken.None).ConfigureAwait(false);
                }
                catch (Exception ex) when (PageStreamReceiver.IsBrokenStream(ex) || ex is InvalidOperationException)
                {
                    // the connection is gone; nothing more to say on it
                }

                BreakAll(new IOException("the connection closed"));
                await _input.CompleteAsync().ConfigureAwait(false);
                await _output.CompleteAsync().ConfigureAwait(false);
            }
        }

        /// <summary>Our SETTINGS (a whole batch fits one frame; the stream window) and the connection's window.</summary>
        private void WriteServerPreface()
        {
            Span<byte> settings = stackalloc byte[18];
            WriteSetting(settings, SettingId.MaxFrameSize, (uint)_maxFrameSize);
            WriteSetting(settings[6..], SettingId.InitialWindowSize, StreamWindow);
            WriteSetting(settings[12..], SettingId.MaxConcurrentStreams, 100);
            WriteFrame(FrameType.Settings, FrameFlags.None, 0, settings);
            WriteWindowUpdate(0, ConnectionWindow - DefaultWindow);
        }

        private static bool StartsWithPreface(ReadOnlySequence<byte> buffer)
        {
            Span<byte> start = stackalloc byte[FrameHeader.ClientPreface.Length];
            buffer.Slice(0, FrameHeader.ClientPreface.Length).CopyTo(start);
            return start.SequenceEqual(FrameHeader.ClientPreface);
        }

        /// <summary>
        /// Handles the frames <paramref name="buffer"/> holds, leaving it at the first byte not handled; false when
        /// the connection is to close.
        /// </summary>
        private bool Process(ref ReadOnlySequence<byte> buffer)
        {
            Span<byte> head = stackalloc byte[FrameHeader.Size];
            while (true)
            {
                if (_inData)
                {
                    ConsumeData(ref buffer);
                    if (_inData)
                    {
                        return true; // the rest of the frame has not arrived
                    }

                    continue;
                }

                if (_goingAway && _streams.Count == 0)
                {
                    return false;
                }

                if (buffer.Length < FrameHeader.Size)
                {
                    return true;
                }

                buffer.Slice(0, FrameHeader.Size).CopyTo(head);
                var header = FrameHeader.Read(head);
                if (header.Length > _maxFrameSize)
                {
                    throw new ConnectionError(Http2ErrorCodes.FrameSizeError,
                        $"a {header.Type} frame of {header.Length} bytes (at most {_maxFrameSize})");
                }

                if (_headerStream != 0 && (header.Type != FrameType.Continuation || header.StreamId != _headerStream))
                {
                    throw new ConnectionError(Http2ErrorCodes.ProtocolError, "a header block was interrupted");
                }

                long whole = FrameHeader.Size + header.Length;
                if (header.Type == FrameType.Data)
                {
                    // Whole, so that a batch is parsed where it lies; piecewise when too large to wait for.
                    if (buffer.Length < whole
                        && (buffer.Length < wholeFrameBytes || buffer.Length < FrameHeader.Size + 1))
                    {
                        return true;
                    }

                    buffer = buffer.Slice(FrameHeader.Size);
                    StartData(header, ref buffer);
                    continue;
                }

                if (buffer.Length < whole)
                {
                    return true;
                }

                var payload = buffer.Slice(FrameHeader.Size, header.Length);
                byte[]? copy = payload.IsSingleSegment ? null : payload.ToArray();
                var span = copy is null ? payload.FirstSpan : copy;
                buffer = buffer.Slice(whole);
                OnControlFrame(header, span);
            }
        }

        private void OnControlFrame(FrameHeader header, ReadOnlySpan<byte> payload)
        {
            switch (header.Type)
            {
                case FrameType.Headers:
                    OnHeaders(header, payload);
                    break;
                case FrameType.Continuation:
                    if (_headerStream == 0)
                    {
                        throw new ConnectionError(Http2ErrorCodes.ProtocolError, "a CONTINUATION with no header block");
                    }

                    _headerBlock.AddRange(payload);
                    if (header.Has(FrameFlags.EndHeaders))
                    {
                        int stream = _headerStream;
                        _headerStream = 0;
                        OnHeaderBlock(stream, _headerEndsStream);
                    }

                    break;
                case FrameType.Settings:
                    OnSettings(header, payload);
                    break;
                case FrameType.Ping:
                    if (header.StreamId != 0 || payload.Length != 8)
                    {
                        throw new ConnectionError(Http2ErrorCodes.FrameSizeError, "a malformed PING frame");
                    }

                    if (!header.Has(FrameFlags.Ack))
                    {
                        WriteFrame(FrameType.Ping, FrameFlags.Ack, 0, payload);
                    }

                    break;
                case FrameType.RstStream:
                    if (payload.Length != 4 || header.StreamId == 0)
                    {
                        throw new ConnectionError(Http2ErrorCodes.FrameSizeError, "a malformed RST_STREAM frame");
                    }

                    if (_streams.TryGetValue(header.StreamId, out var reset))
                    {
                        uint code = BinaryPrimitives.ReadUInt32BigEndian(payload);
                        Fail(reset, new IOException($"the source reset the stream ({Http2ErrorCodes.Name(code)})"));
                    }

                    break;
                case FrameType.GoAway:
                    if (payload.Length < 8 || header.StreamId != 0)
                    {
                        throw new ConnectionError(Http2ErrorCodes.FrameSizeError, "a malformed GOAWAY frame");
                    }

                    _goingAway = true; // the streams open go on; the connection closes when they have ended
                    break;
                case FrameType.WindowUpdate:
                    if (payload.Length != 4)
                    {
                        throw new ConnectionError(Http2ErrorCodes.FrameSizeError, "a malformed WINDOW_UPDATE frame");
                    }

                    break; // credit for what we send: a few hundred bytes per stream, see the class remarks
                case FrameType.PushPromise:
                    throw new ConnectionError(Http2ErrorCodes.ProtocolError, "a PUSH_PROMISE from a client");
                default:
                    break; // PRIORITY and unknown types are ignored (RFC 9113, 4.1, 5.5)
            }
        }

        private void OnSettings(FrameHeader header, ReadOnlySpan<byte> payload)
        {
            if (header.StreamId != 0 || (header.Has(FrameFlags.Ack) ? payload.Length != 0 : payload.Length % 6 != 0))
            {
                throw new ConnectionError(Http2ErrorCodes.FrameSizeError, "a malformed SETTINGS frame");
            }

            if (header.Has(FrameFlags.Ack))
            {
                return;
            }

            for (; payload.Length > 0; payload = payload[6..])
            {
                var id = (SettingId)BinaryPrimitives.ReadUInt16BigEndian(payload);
                uint value = BinaryPrimitives.ReadUInt32BigEndian(payload[2..]);
                if (id == SettingId.MaxFrameSize
                    && value is < FrameHeader.MinMaxFrameSize or > FrameHeader.MaxMaxFrameSize)
                {
                    throw new ConnectionError(Http2ErrorCodes.ProtocolError, $"a maximum frame size of {value}");
                }

                if (id == SettingId.InitialWindowSize && value > int.MaxValue)
                {
                    throw new ConnectionError(Http2ErrorCodes.FlowControlError, $"an initial window of {value}");
                }
            }

            WriteFrame(FrameType.Settings, FrameFlags.Ack, 0, []);
        }

        private void OnHeaders(FrameHeader header, ReadOnlySpan<byte> payload)
        {
            if (header.StreamId == 0 || header.StreamId % 2 == 0)
            {
                throw new ConnectionError(Http2ErrorCodes.ProtocolError, $"HEADERS on stream {header.StreamId}");
            }

            _headerBlock.Clear();
            _headerBlock.AddRange(Unpad(header, payload, header.Has(FrameFlags.Priority) ? 5 : 0));
            _headerEndsStream = header.Has(FrameFlags.EndStream);
            if (header.Has(FrameFlags.EndHeaders))
            {
                OnHeaderBlock(header.StreamId, _headerEndsStream);
            }
            else
            {
                _headerStream = header.StreamId;
            }
        }

        private void OnHeaderBlock(int streamId, bool endStream)
        {
            var fields = new List<KeyValuePair<string, string>>();
            try
            {
                _hpack.Decode(CollectionsMarshal.AsSpan(_headerBlock), fields);
            }
            catch (HpackException ex)
            {
                throw new ConnectionError(9, ex.Message); // COMPRESSION_ERROR: the table state is lost
            }

            if (_streams.TryGetValue(streamId, out var open))
            {
                // Trailers: the end of the request
                if (!endStream)
                {
                    throw new ConnectionError(Http2ErrorCodes.ProtocolError, "a second header block that does not "
                        + "end the stream");
                }

                EndRequest(open);
                return;
            }

            if (streamId <= _lastStreamId)
            {
                throw new ConnectionError(5, $"HEADERS on closed stream {streamId}"); // STREAM_CLOSED
            }

            _lastStreamId = streamId;
            if (_goingAway)
            {
                WriteReset(streamId, 7); // REFUSED_STREAM
                return;
            }

            Open(streamId, fields, endStream);
        }

        /// <summary>A new stream: checked as Kestrel, the token middleware and the endpoint check a call.</summary>
        private void Open(int streamId, List<KeyValuePair<string, string>> fields, bool endStream)
        {
            string? Field(string name)
            {
                string? value = null;
                foreach (var (key, text) in fields)
                {
                    if (key == name)
                    {
                        value = value is null ? text : $"{value},{text}";
                    }
                }

                return value;
            }

            Status? refusal = null;
            if (handler._security.TokenRefusal(Field(WireNames.AuthorizationHeader) ?? "") is { } noToken)
            {
                refusal = new Status(StatusCode.Unauthenticated, noToken);
            }
            else if (Field(":path") is not PageStreamEndpoint.Path)
            {
                refusal = new Status(StatusCode.Unimplemented,
                    $"this connection carries only {PageStreamEndpoint.Path}, not {Field(":path")}");
            }
            else if (Field(":method") != "POST" || Field("content-type") is not { } type
                || !type.StartsWith(GrpcStatusWriter.ContentType, StringComparison.OrdinalIgnoreCase))
            {
                var block = new List<byte>();
                Hpack.WriteLiteral(block, ":status", "415");
                WriteHeaders(streamId, block, endStream: true);
                Refused(streamId, endStream);
                return;
            }

            IncomingMigration? migration = null;
            try
            {
                migration = refusal is null
                    ? handler._migrations.RequireReceiving(Field(WireNames.MigrationIdHeader),
                        CallerCredentials.Of(Field(WireNames.MigrationKeyHeader), null))
                    : null;
            }
            catch (RpcException ex)
            {
                refusal = ex.Status;
            }

            if (migration is null)
            {
                WriteStatus(streamId, refusal!.Value, trailersOnly: true);
                Refused(streamId, endStream);
                return;
            }

            var receiver = new PageStreamReceiver(handler._migrations, migration,
                handler._options.MaxPageMessageBytes, handler._log);
            var stream = new InboundStream(streamId, receiver);
            migration.StreamOpened();
            _streams.Add(streamId, stream);
            if (endStream)
            {
                EndRequest(stream);
            }
        }

        /// <summary>A refused stream's request may still be coming: tell the client to stop (as Kestrel does).</summary>
        private void Refused(int streamId, bool endStream)
        {
            if (!endStream)
            {
                WriteReset(streamId, Http2ErrorCodes.NoError);
            }
        }

        private void StartData(FrameHeader header, ref ReadOnlySequence<byte> buffer)
        {
            if (header.StreamId == 0)
            {
                throw new ConnectionError(Http2ErrorCodes.ProtocolError, "a DATA frame on stream 0");
            }

            if (header.StreamId > _lastStreamId)
            {
                throw new ConnectionError(Http2ErrorCodes.ProtocolError, $"DATA on idle stream {header.StreamId}");
            }

            _receiveWindow -= header.Length;
            if (_receiveWindow < 0)
            {
                throw new ConnectionError(Http2ErrorCodes.FlowControlError, "DATA beyond the connection's window");
            }

            _dataStream = _streams.GetValueOrDefault(header.StreamId); // null: a stream that ended; its data is dropped
            if (_dataStream is { } stream)
            {
                stream.ReceiveWindow -= header.Length;
                if (stream.ReceiveWindow < 0)
                {
                    throw new ConnectionError(Http2ErrorCodes.FlowControlError, "DATA beyond a stream's window");
                }
            }

            _dataLeft = header.Length;
            _padLeft = 0;
            if (header.Has(FrameFlags.Padded))
            {
                int pad = header.Length > 0 ? buffer.FirstSpan[0] : -1;
                if (pad < 0 || pad > header.Length - 1)
                {
                    throw new ConnectionError(Http2ErrorCodes.ProtocolError, "a DATA frame whose padding exceeds it");
                }

                buffer = buffer.Slice(1);
                Consumed(1, _dataStream);
                _dataLeft = header.Length - 1 - pad;
                _padLeft = pad;
            }

            _dataEndsStream = header.Has(FrameFlags.EndStream);
            _inData = true;
        }

        /// <summary>Hands the current DATA frame's bytes in <paramref name="buffer"/> to its stream.</summary>
        private void ConsumeData(ref ReadOnlySequence<byte> buffer)
        {
            var stream = _dataStream;
            if (_dataLeft > 0 && !buffer.IsEmpty)
            {
                int take = (int)Math.Min(_dataLeft, buffer.Length);
                if (stream is not null)
                {
                    try
                    {
                        stream.OnData(buffer.Slice(0, take));
                    }
#pragma warning disable CA1031 // the stream's boundary: mapped by PageStreamReceiver.Fail, as the endpoint maps it
                    catch (Exception ex)
#pragma warning restore CA1031
                    {
                        Fail(stream, ex);
                        stream = _dataStream = null;
                    }
                }

                buffer = buffer.Slice(take);
                _dataLeft -= take;
                Consumed(take, stream);
            }

            if (_dataLeft == 0 && _padLeft > 0)
            {
                int skip = (int)Math.Min(_padLeft, buffer.Length);
                buffer = buffer.Slice(skip);
                _padLeft -= skip;
                Consumed(skip, stream);
            }

            if (_dataLeft > 0 || _padLeft > 0)
            {
                return;
            }

            _inData = false;
            _dataStream = null;
            if (_dataEndsStream && stream is not null)
            {
                EndRequest(stream);
            }
        }

        /// <summary>Grants credit for what was consumed, a quarter of a window at a time.</summary>
        private void Consumed(int bytes, InboundStream? stream)
        {
            _unacknowledged += bytes;
            if (_unacknowledged >= ConnectionWindow / 4)
            {
                WriteWindowUpdate(0, _unacknowledged);
                _receiveWindow += _unacknowledged;
                _unacknowledged = 0;
            }

            if (stream is not null && _streams.ContainsKey(stream.Id))
            {
                stream.Unacknowledged += bytes;
                if (stream.Unacknowledged >= StreamWindow / 4)
                {
                    WriteWindowUpdate(stream.Id, stream.Unacknowledged);
                    stream.ReceiveWindow += stream.Unacknowledged;
                    stream.Unacknowledged = 0;
                }
            }
        }

        /// <summary>The source ended its request: answer with the summary, as the endpoint does.</summary>
        private void EndRequest(InboundStream stream)
        {
            try
            {
                stream.EndRequest();
            }
#pragma warning disable CA1031 // the stream's boundary, as in ConsumeData
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Fail(stream, ex);
                return;
            }

            Close(stream);
            var headers = new List<byte>();
            Hpack.WriteIndexed(headers, 8); // :status 200
            Hpack.WriteLiteral(headers, "content-type", GrpcStatusWriter.ContentType);
            WriteHeaders(stream.Id, headers, endStream: false);
            byte[] summary = stream.Receiver.Summary.ToByteArray();
            byte[] message = new byte[PageStreamReceiver.PrefixLength + summary.Length];
            BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(1), (uint)summary.Length);
            summary.CopyTo(message, PageStreamReceiver.PrefixLength);
            WriteFrame(FrameType.Data, FrameFlags.None, stream.Id, message);
            WriteStatus(stream.Id, Status.DefaultSuccess, trailersOnly: false);
        }

        /// <summary>The stream failed: the migration fails as the endpoint fails it, and the source hears why.</summary>
        private void Fail(InboundStream stream, Exception ex)
        {
            var status = stream.Receiver.Fail(ex, PageStreamEndpoint.Path);
            Close(stream);
            if (status is { } answer)
            {
                WriteStatus(stream.Id, answer, trailersOnly: true);
                WriteReset(stream.Id, Http2ErrorCodes.NoError); // its request is still open: stop sending
            }
        }

        /// <summary>Every open stream broke with <paramref name="ex"/> (the connection is going).</summary>
        private void BreakAll(Exception ex)
        {
            foreach (var stream in _streams.Values.ToArray())
            {
                Fail(stream, ex);
            }
        }

        private void Close(InboundStream stream)
        {
            if (_streams.Remove(stream.Id))
            {
                stream.Receiver.Migration.StreamClosed();
            }

            if (ReferenceEquals(_dataStream, stream))
            {
                _dataStream = null;
            }
        }

        private void WriteStatus(int streamId, Status status, bool trailersOnly)
        {
            var block = new List<byte>();
            if (trailersOnly)
            {
                Hpack.WriteIndexed(block, 8); // :status 200
                Hpack.WriteLiteral(block, "content-type", GrpcStatusWriter.ContentType);
            }

            Hpack.WriteLiteral(block, "grpc-status",
                ((int)status.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture));
            if (status.Detail.Length > 0)
            {
                string message = GrpcStatusWriter.PercentEncode(status.Detail);
                Hpack.WriteLiteral(block, "grpc-message", message.Length > 8192 ? message[..8192] : message);
            }

            WriteHeaders(streamId, block, endStream: true);
        }

        private void WriteHeaders(int streamId, List<byte> block, bool endStream) =>
            WriteFrame(FrameType.Headers, FrameFlags.EndHeaders | (endStream ? FrameFlags.EndStream : FrameFlags.None),
                streamId, CollectionsMarshal.AsSpan(block));

        private void WriteReset(int streamId, uint code)
        {
            Span<byte> payload = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(payload, code);
            WriteFrame(FrameType.RstStream, FrameFlags.None, streamId, payload);
        }

        private void WriteWindowUpdate(int streamId, int increment)
        {
            Span<byte> payload = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)increment);
            WriteFrame(FrameType.WindowUpdate, FrameFlags.None, streamId, payload);
        }

        private void WriteGoAway(uint code, string debug)
        {
            byte[] text = System.Text.Encoding.UTF8.GetBytes(debug);
            var payload = new byte[8 + Math.Min(text.Length, 1024)];
            BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)_lastStreamId);
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(4), code);
            text.AsSpan(0, payload.Length - 8).CopyTo(payload.AsSpan(8));
            WriteFrame(FrameType.GoAway, FrameFlags.None, 0, payload);
        }

        private static void WriteSetting(Span<byte> destination, SettingId id, uint value)
        {
            BinaryPrimitives.WriteUInt16BigEndian(destination, (ushort)id);
            BinaryPrimitives.WriteUInt32BigEndian(destination[2..], value);
        }

        private void WriteFrame(FrameType type, FrameFlags flags, int streamId, ReadOnlySpan<byte> payload)
        {
            var span = _output.GetSpan(FrameHeader.Size + payload.Length);
            FrameHeader.Write(span, payload.Length, type, flags, streamId);
            payload.CopyTo(span[FrameHeader.Size..]);
            _output.Advance(FrameHeader.Size + payload.Length);
            _unflushed = true;
        }

        private async ValueTask FlushAsync(CancellationToken ct)
        {
            if (_unflushed)
            {
                _unflushed = false;
                await _output.FlushAsync(ct).ConfigureAwait(false);
            }
        }

        private static ReadOnlySpan<byte> Unpad(FrameHeader header, ReadOnlySpan<byte> payload, int skip) =>
            FrameHeader.Unpad(header, ref payload, skip) is { } problem
                ? throw new ConnectionError(Http2ErrorCodes.ProtocolError, problem)
                : payload;
    }

    /// <summary>
    /// One stream's request: its gRPC messages cut out of DATA payloads. A message that lies whole in one payload is
    /// applied where it lies; one split across frames is assembled first.
    /// </summary>
    private sealed class InboundStream(int id, PageStreamReceiver receiver)
    {
        private readonly byte[] _prefix = new byte[PageStreamReceiver.PrefixLength];
        private int _prefixFilled;
        private int _length = -1; // the message under way; -1: its prefix is still coming
        private byte[] _assembly = [];
        private int _filled;

        public int Id => id;

        public PageStreamReceiver Receiver => receiver;

        public long ReceiveWindow { get; set; } = StreamWindow;

        public int Unacknowledged { get; set; }

        public void OnData(ReadOnlySequence<byte> data)
        {
            while (!data.IsEmpty)
            {
                if (_length < 0)
                {
                    int take = (int)Math.Min(PageStreamReceiver.PrefixLength - _prefixFilled, data.Length);
                    data.Slice(0, take).CopyTo(_prefix.AsSpan(_prefixFilled));
                    data = data.Slice(take);
                    _prefixFilled += take;
                    if (_prefixFilled < PageStreamReceiver.PrefixLength)
                    {
                        return;
                    }

                    _prefixFilled = 0;
                    _length = receiver.MessageLength(_prefix);
                    _filled = 0;
                }

                if (_filled == 0 && data.Length >= _length)
                {
                    receiver.Apply(data.Slice(0, _length)); // where it lies: no copy
                    data = data.Slice(_length);
                    _length = -1;
                    continue;
                }

                if (_assembly.Length < _length)
                {
                    _assembly = GC.AllocateUninitializedArray<byte>(_length);
                }

                int part = (int)Math.Min(_length - _filled, data.Length);
                data.Slice(0, part).CopyTo(_assembly.AsSpan(_filled));
                data = data.Slice(part);
                _filled += part;
                if (_filled == _length)
                {
                    receiver.Apply(new ReadOnlySequence<byte>(_assembly, 0, _length));
                    _length = -1;
                    _filled = 0;
                }
            }
        }

        /// <summary>The request ended: throws if it ended inside a message.</summary>
        public void EndRequest()
        {
            long left = _length < 0 ? _prefixFilled : PageStreamReceiver.PrefixLength + _filled;
            if (left > 0)
            {
                throw PageStreamReceiver.EndedInsideAMessage(left);
            }
        }
    }
}
