using System.Buffers;

namespace Migration.Shared.Transport;

/// <summary>
/// Hand-written codec for the <c>PageBatch</c> protobuf message (see <c>proto/migration.proto</c>), the only message
/// on the bulk path. Writing and reading it by hand lets the source encode pages straight into the gRPC write buffer
/// and the target read them out of the received buffer with no protobuf object graph and no per-message allocation.
/// </summary>
/// <remarks>
/// The writer emits canonical protobuf (fields 1-5 in order, packed repeated fields). The reader accepts anything a
/// protobuf parser would: fields in any order, packed or unpacked repeated fields, unknown fields (skipped). It
/// reports malformed input as a message, never an exception, so the target can answer with a clear status.
/// </remarks>
public static class PageBatchWire
{
    /// <summary>gRPC method path pieces of <c>PageStream.SendPages</c>.</summary>
    public const string ServiceName = "migration.v1.PageStream";

    public const string SendPagesMethod = "SendPages";

    /// <summary>Upper bound on pages in one batch a target accepts (bounds the reader's arrays).</summary>
    public const int MaxPagesPerBatch = 65536;

    private const int Varint = 0;
    private const int LengthDelimited = 2;
    private const byte RoundTag = ((int)PageBatchField.Round << 3) | Varint;
    private const byte PfnsTag = ((int)PageBatchField.Pfns << 3) | LengthDelimited;           // packed varints
    private const byte EncodingsTag = ((int)PageBatchField.Encodings << 3) | LengthDelimited; // packed varints
    private const byte LengthsTag = ((int)PageBatchField.Lengths << 3) | LengthDelimited;     // packed varints
    private const byte PayloadTag = ((int)PageBatchField.Payload << 3) | LengthDelimited;     // bytes

    /// <summary>
    /// Sizes one batch: the packed sections' lengths (needed again by <see cref="Write"/>, so computed once) and the
    /// message's length on the wire without gRPC's 5-byte frame header.
    /// </summary>
    public static PageBatchLayout Measure(uint round, ReadOnlySpan<long> pfns, ReadOnlySpan<byte> kinds,
        ReadOnlySpan<int> lengths, int payloadLength)
    {
        int pfnBytes = 0;
        int lengthBytes = 0;
        for (int i = 0; i < pfns.Length; i++)
        {
            pfnBytes += VarintLength((ulong)pfns[i]);
            lengthBytes += VarintLength((uint)lengths[i]);
        }

        int total = round == 0 ? 0 : 1 + VarintLength(round);
        if (pfns.Length > 0)
        {
            total += 1 + VarintLength((uint)pfnBytes) + pfnBytes;
            total += 1 + VarintLength((uint)kinds.Length) + kinds.Length; // encodings 0..3 are one byte each
            total += 1 + VarintLength((uint)lengthBytes) + lengthBytes;
        }

        if (payloadLength > 0)
        {
            total += 1 + VarintLength((uint)payloadLength) + payloadLength;
        }

        return new PageBatchLayout(pfnBytes, lengthBytes, total);
    }

    /// <summary>
    /// Writes one batch measured by <see cref="Measure"/> with the same arguments; <paramref name="output"/> must have
    /// room for <see cref="PageBatchLayout.MessageLength"/> bytes.
    /// </summary>
    public static int Write(Span<byte> output, PageBatchLayout layout, uint round, ReadOnlySpan<long> pfns,
        ReadOnlySpan<byte> kinds, ReadOnlySpan<int> lengths, ReadOnlySpan<byte> payload)
    {
        int pos = WriteHeader(output, layout, round, pfns, kinds, lengths, payload.Length);
        payload.CopyTo(output[pos..]);
        return pos + payload.Length;
    }

    /// <summary>
    /// Writes everything of a batch but the payload's bytes (the payload field's tag and length included); the caller
    /// writes exactly <paramref name="payloadLength"/> payload bytes after it. Returns the header's length.
    /// </summary>
    public static int WriteHeader(Span<byte> output, PageBatchLayout layout, uint round, ReadOnlySpan<long> pfns,
        ReadOnlySpan<byte> kinds, ReadOnlySpan<int> lengths, int payloadLength)
    {
        int pos = 0;
        if (round != 0)
        {
            output[pos++] = RoundTag;
            pos += WriteVarint(output[pos..], round);
        }

        if (pfns.Length > 0)
        {
            output[pos++] = PfnsTag;
            pos += WriteVarint(output[pos..], (uint)layout.PfnBytes);
            foreach (long pfn in pfns)
            {
                pos += WriteVarint(output[pos..], (ulong)pfn);
            }

            output[pos++] = EncodingsTag;
            pos += WriteVarint(output[pos..], (uint)kinds.Length);
            kinds.CopyTo(output[pos..]);
            pos += kinds.Length;

            output[pos++] = LengthsTag;
            pos += WriteVarint(output[pos..], (uint)layout.LengthBytes);
            foreach (int length in lengths)
            {
                pos += WriteVarint(output[pos..], (uint)length);
            }
        }

        if (payloadLength > 0)
        {
            output[pos++] = PayloadTag;
            pos += WriteVarint(output[pos..], (uint)payloadLength);
        }

        return pos;
    }

    /// <summary>
    /// Parses one message into <paramref name="batch"/> (whose buffers it reuses). Returns null, or what is wrong
    /// with the message. Page-level checks (ranges, payload lengths per encoding) are the receiver's job.
    /// </summary>
    public static ProtocolError? Read(ReadOnlySequence<byte> message, ReceivedBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        batch.Reset();
        var reader = new SequenceReader<byte>(message);
        bool havePayload = false;
        while (!reader.End)
        {
            if (!TryReadVarint(ref reader, out ulong key))
            {
                return Error(ProtocolErrorKind.Truncated, "truncated field key");
            }

            var field = (PageBatchField)(key >> 3);
            int wireType = (int)(key & 7);
            switch (field, wireType)
            {
                case (PageBatchField.Round, Varint):
                    if (!TryReadVarint(ref reader, out ulong round) || round > uint.MaxValue)
                    {
                        return Error(ProtocolErrorKind.BadLength, "bad round");
                    }

                    batch.Round = (uint)round;
                    break;
                case (PageBatchField.Pfns or PageBatchField.Encodings or PageBatchField.Lengths, Varint):
                    if (!TryReadVarint(ref reader, out ulong value))
                    {
                        return Error(ProtocolErrorKind.Truncated, $"truncated field {(int)field}");
                    }

                    if (batch.Add(field, value) is { } error)
                    {
                        return error;
                    }

                    break;
                case (PageBatchField.Pfns or PageBatchField.Encodings or PageBatchField.Lengths, LengthDelimited):
                    if (!TryReadLength(ref reader, out int packedLength))
                    {
                        return Error(ProtocolErrorKind.BadLength, $"bad length of packed field {(int)field}");
                    }

                    var packed = new SequenceReader<byte>(reader.UnreadSequence.Slice(0, packedLength));
                    reader.Advance(packedLength);
                    while (!packed.End)
                    {
                        if (!TryReadVarint(ref packed, out ulong item))
                        {
                            return Error(ProtocolErrorKind.Truncated, $"truncated packed field {(int)field}");
                        }

                        if (batch.Add(field, item) is { } packedError)
                        {
                            return packedError;
                        }
                    }

                    break;
                case (PageBatchField.Payload, LengthDelimited):
                    if (havePayload)
                    {
                        return Error(ProtocolErrorKind.Duplicate, "payload appears twice");
                    }

                    if (!TryReadLength(ref reader, out int payloadLength))
                    {
                        return Error(ProtocolErrorKind.BadLength, "bad payload length");
                    }

                    batch.SetPayload(reader.UnreadSequence.Slice(0, payloadLength));
                    reader.Advance(payloadLength);
                    havePayload = true;
                    break;
                case (_, Varint):
                    if (!TryReadVarint(ref reader, out _))
                    {
                        return Error(ProtocolErrorKind.Truncated, $"truncated unknown field {(int)field}");
                    }

                    break;
                case (_, 1) or (_, 5):
                    int width = wireType == 1 ? 8 : 4;
                    if (reader.Remaining < width)
                    {
                        return Error(ProtocolErrorKind.Truncated, $"truncated unknown field {(int)field}");
                    }

                    reader.Advance(width);
                    break;
                case (_, LengthDelimited):
                    if (!TryReadLength(ref reader, out int skip))
                    {
                        return Error(ProtocolErrorKind.BadLength, $"bad length of unknown field {(int)field}");
                    }

                    reader.Advance(skip);
                    break;
                default:
                    return Error(ProtocolErrorKind.UnsupportedWireType,
                        $"unsupported wire type {wireType} for field {(int)field}");
            }
        }

        return batch.CheckShape();
    }

    private static ProtocolError Error(ProtocolErrorKind kind, string detail) => new(kind, detail);

    /// <summary>
    /// The most bytes <see cref="WriteHeader"/> writes for a batch of <paramref name="maxPages"/> pages: each field's
    /// tag and longest length, ten bytes per page number, one per encoding and five per payload length.
    /// </summary>
    public static int MaxHeaderLength(int maxPages) => 5 * (1 + MaxVarint32) + maxPages * (10 + 1 + MaxVarint32);

    private const int MaxVarint32 = 5;

    public static int VarintLength(ulong value)
    {
        int n = 1;
        while (value >= 0x80)
        {
            value >>= 7;
            n++;
        }

        return n;
    }

    private static int WriteVarint(Span<byte> output, ulong value)
    {
        int n = 0;
        while (value >= 0x80)
        {
            output[n++] = (byte)(value | 0x80);
            value >>= 7;
        }

        output[n++] = (byte)value;
        return n;
    }

    private static bool TryReadVarint(ref SequenceReader<byte> reader, out ulong value)
    {
        value = 0;
        for (int shift = 0; shift < 70; shift += 7)
        {
            if (!reader.TryRead(out byte b))
            {
                return false;
            }

            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80)
            {
                return true;
            }
        }

        return false; // more than 10 bytes
    }

    private static bool TryReadLength(ref SequenceReader<byte> reader, out int length)
    {
        length = 0;
        if (!TryReadVarint(ref reader, out ulong raw) || raw > (ulong)reader.Remaining)
        {
            return false;
        }

        length = (int)raw;
        return true;
    }
}

/// <summary>The field numbers of <c>PageBatch</c> in <c>proto/migration.proto</c>.</summary>
public enum PageBatchField
{
    Round = 1,
    Pfns = 2,
    Encodings = 3,
    Lengths = 4,
    Payload = 5,
}

/// <summary>The sizes <see cref="PageBatchWire.Measure"/> found: both packed sections and the whole message.</summary>
public readonly record struct PageBatchLayout(int PfnBytes, int LengthBytes, int MessageLength);

/// <summary>
/// One received <c>PageBatch</c>, parsed by <see cref="PageBatchWire.Read"/> into reusable buffers: page numbers,
/// encodings and lengths side by side, and the concatenated payload as a view of the message it came in.
/// </summary>
/// <remarks>
/// Rent one per stream and reuse it for every message. <see cref="Payload"/> is valid only as long as the message's
/// buffer is: the receiver decodes the pages before it releases the buffer, so no payload byte is copied twice.
/// </remarks>
public sealed class ReceivedBatch
{
    private ulong[] _pfns = new ulong[256];
    private byte[] _kinds = new byte[256];
    private uint[] _lengths = new uint[256];
    private int _pfnCount;
    private int _kindCount;
    private int _lengthCount;

    public uint Round { get; internal set; }

    /// <summary>Pages in the batch (valid after a successful read).</summary>
    public int Count => _pfnCount;

    public ReadOnlySpan<ulong> Pfns => _pfns.AsSpan(0, _pfnCount);

    public ReadOnlySpan<byte> Kinds => _kinds.AsSpan(0, _kindCount);

    public ReadOnlySpan<uint> Lengths => _lengths.AsSpan(0, _lengthCount);

    public int PayloadLength => (int)Payload.Length;

    /// <summary>The pages' payloads, concatenated: a view of the received message (see the remarks).</summary>
    public ReadOnlySequence<byte> Payload { get; private set; }

    internal void Reset()
    {
        Round = 0;
        _pfnCount = _kindCount = _lengthCount = 0;
        Payload = default;
    }

    internal ProtocolError? Add(PageBatchField field, ulong value)
    {
        switch (field)
        {
            case PageBatchField.Pfns:
                if (_pfnCount == PageBatchWire.MaxPagesPerBatch)
                {
                    return new(ProtocolErrorKind.TooMany,
                        $"more than {PageBatchWire.MaxPagesPerBatch} pages in one batch");
                }

                Grow(ref _pfns, _pfnCount);
                _pfns[_pfnCount++] = value;
                return null;
            case PageBatchField.Encodings:
                if (_kindCount == PageBatchWire.MaxPagesPerBatch)
                {
                    return new(ProtocolErrorKind.TooMany,
                        $"more than {PageBatchWire.MaxPagesPerBatch} encodings in one batch");
                }

                Grow(ref _kinds, _kindCount);
                // unknown encodings are rejected per page
                _kinds[_kindCount++] = value > (ulong)PageEncodingKind.Delta ? byte.MaxValue : (byte)value;
                return null;
            default:
                if (_lengthCount == PageBatchWire.MaxPagesPerBatch)
                {
                    return new(ProtocolErrorKind.TooMany,
                        $"more than {PageBatchWire.MaxPagesPerBatch} lengths in one batch");
                }

                if (value > uint.MaxValue)
                {
                    return new(ProtocolErrorKind.BadLength, $"page length {value} is out of range");
                }

                Grow(ref _lengths, _lengthCount);
                _lengths[_lengthCount++] = (uint)value;
                return null;
        }
    }

    internal void SetPayload(ReadOnlySequence<byte> payload) => Payload = payload;

    internal ProtocolError? CheckShape() =>
        _kindCount == _pfnCount && _lengthCount == _pfnCount
            ? null
            : new ProtocolError(ProtocolErrorKind.Inconsistent,
                $"batch has {_pfnCount} page numbers, {_kindCount} encodings and {_lengthCount} lengths");

    private static void Grow<T>(ref T[] array, int count)
    {
        if (count == array.Length)
        {
            Array.Resize(ref array, Math.Min(array.Length * 2, PageBatchWire.MaxPagesPerBatch));
        }
    }
}
