using Grpc.Core;
using Migration.Shared.Guest;
using Migration.Shared.Transport;

namespace Migration.Source.Transport;

/// <summary>
/// One channel's reusable outgoing <c>PageBatch</c>: pages are encoded from guest RAM into a pinned staging buffer
/// (zero detection, LZ4), then the marshaller writes the message straight into gRPC's buffer with
/// <see cref="PageBatchWire"/>, with no protobuf object in between.
/// </summary>
internal sealed class OutgoingBatch
{
    private readonly long[] _pfns;
    private readonly byte[] _kinds;
    private readonly int[] _lengths;
    private readonly byte[] _payload;
    private int _count;
    private int _payloadLength;
    private uint _round;

    public OutgoingBatch(int maxPages)
    {
        _pfns = new long[maxPages];
        _kinds = new byte[maxPages];
        _lengths = new int[maxPages];
        _payload = GC.AllocateUninitializedArray<byte>(maxPages * PageCodec.MaxEncodedLength, pinned: true);
    }

    private PageBatchLayout _layout;

    /// <summary>Serialized length of the current batch (what the marshaller will write).</summary>
    public int MessageLength => _layout.MessageLength;

    /// <summary>
    /// Encodes <paramref name="pfns"/> as they are in RAM now; returns how many went zero, raw and LZ4.
    /// </summary>
    public (long Zero, long Raw, long Lz4) Encode(GuestRam ram, ReadOnlySpan<long> pfns, uint round, bool compress)
    {
        long zero = 0, raw = 0, lz4 = 0;
        int offset = 0;
        for (int i = 0; i < pfns.Length; i++)
        {
            long pfn = pfns[i];
            var (kind, length) = PageCodec.Encode(ram.Page(pfn), _payload.AsSpan(offset), compress);
            _pfns[i] = pfn;
            _kinds[i] = (byte)kind;
            _lengths[i] = length;
            offset += length;
            switch (kind)
            {
                case PageEncodingKind.Zero: zero++; break;
                case PageEncodingKind.Raw: raw++; break;
                default: lz4++; break;
            }
        }

        _count = pfns.Length;
        _payloadLength = offset;
        _round = round;
        _layout = PageBatchWire.Measure(round, _pfns.AsSpan(0, _count), _kinds.AsSpan(0, _count),
            _lengths.AsSpan(0, _count), offset);
        return (zero, raw, lz4);
    }

    public void WriteTo(SerializationContext context)
    {
        context.SetPayloadLength(MessageLength);
        var writer = context.GetBufferWriter();
        int written = PageBatchWire.Write(writer.GetSpan(MessageLength), _layout, _round, _pfns.AsSpan(0, _count),
            _kinds.AsSpan(0, _count), _lengths.AsSpan(0, _count), _payload.AsSpan(0, _payloadLength));
        writer.Advance(written);
        context.Complete();
    }
}
