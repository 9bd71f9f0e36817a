using Grpc.Core;
using Migration.Shared.Guest;

namespace Migration.Shared.Transport;

/// <summary>
/// One channel's reusable outgoing <c>PageBatch</c>: <see cref="Encode"/> classifies each page of its guest's RAM
/// (<see cref="PageCodec.Classify"/>: zero detection, LZ4 into a pinned staging buffer), then the marshaller writes the message straight into gRPC's buffer with
/// <see cref="PageBatchWire"/>, no protobuf object in between: raw pages are copied from guest RAM into that buffer
/// directly, once (a profile of the raw stream found a fifth of the source's CPU in copying them twice).
/// </summary>
/// <remarks>
/// A raw page is read when the message is written, a little later than it was classified. That is as safe as reading
/// it at classification: both reads come after the page left the migration bitmap (and its manual-mode chunk was
/// re-armed), so any write the read misses or half sees is logged and the page is sent again; a page classified zero
/// that is written meanwhile is likewise logged. Stop-and-copy reads a paused guest, so the last copy is exact.
/// A page that goes through the delta cache (<see cref="DeltaEncoder"/>: every page after round 0, and in round 0 a
/// page the cache has a free slot for) is read once instead, into the staging buffer, and everything goes from there:
/// the cache must hold exactly the bytes that were sent (rule C3), which a second read of a running guest's page
/// would not be.
/// </remarks>
internal sealed class OutgoingBatch
{
    private readonly long[] _pfns;
    private readonly byte[] _kinds;
    private readonly int[] _lengths;
    private readonly bool[] _fromRam; // raw pages copied from guest RAM as the message is written
    private readonly byte[] _staging; // every other payload, in page order
    private readonly GuestRam _ram;
    private readonly DeltaEncoder? _delta;
    private int _count;
    private int _payloadLength;
    private uint _round;
    private bool _anyFromRam;

    public OutgoingBatch(GuestRam ram, int maxPages, DeltaEncoder? delta = null)
    {
        ArgumentNullException.ThrowIfNull(ram);
        _ram = ram;
        _delta = delta;
        _pfns = new long[maxPages];
        _kinds = new byte[maxPages];
        _lengths = new int[maxPages];
        _fromRam = new bool[maxPages];
        _staging = GC.AllocateUninitializedArray<byte>(maxPages * PageCodec.MaxEncodedLength, pinned: true);
    }

    private PageBatchLayout _layout;

    /// <summary>Serialized length of the current batch (what the marshaller will write).</summary>
    public int MessageLength => _layout.MessageLength;

    /// <summary>
    /// Encodes <paramref name="pfns"/> as they are in RAM now; returns how many went zero, raw, LZ4 and as deltas,
    /// and what the delta cache did.
    /// </summary>
    public PageTally Encode(ReadOnlySpan<long> pfns, uint round, bool compress)
    {
        var tally = new PageTally();
        int payload = 0, staged = 0;
        bool anyFromRam = false;
        using var lease = _delta?.Enter() ?? default;
        for (int i = 0; i < pfns.Length; i++)
        {
            long pfn = pfns[i];
            PageEncodingKind kind;
            int length;
            bool fromRam = false;
            if (_delta is not null && (round > 0 || lease.HasFreeSlot(pfn)))
            {
                var slot = _staging.AsSpan(staged, PageCodec.MaxEncodedLength);
                _ram.Page(pfn).CopyTo(slot); // the one read of this page
                (kind, length) = _delta.Encode(lease, pfn, round, slot, compress, ref tally);
                staged += length;
            }
            else
            {
                (kind, length) = PageCodec.Classify(_ram.Page(pfn), _staging.AsSpan(staged), compress);
                switch (kind)
                {
                    case PageEncodingKind.Zero: tally.Zero++; break;
                    case PageEncodingKind.Raw: tally.Raw++; fromRam = true; break;
                    default: tally.Lz4++; staged += length; break;
                }
            }

            _pfns[i] = pfn;
            _kinds[i] = (byte)kind;
            _lengths[i] = length;
            _fromRam[i] = fromRam;
            anyFromRam |= fromRam;
            payload += length;
        }

        _count = pfns.Length;
        _payloadLength = payload;
        _round = round;
        _anyFromRam = anyFromRam;
        _layout = PageBatchWire.Measure(round, _pfns.AsSpan(0, _count), _kinds.AsSpan(0, _count),
            _lengths.AsSpan(0, _count), payload);
        return tally;
    }

    public void WriteTo(SerializationContext context)
    {
        context.SetPayloadLength(MessageLength);
        var writer = context.GetBufferWriter();
        var output = writer.GetSpan(MessageLength);
        int pos = PageBatchWire.WriteHeader(output, _layout, _round, _pfns.AsSpan(0, _count),
            _kinds.AsSpan(0, _count), _lengths.AsSpan(0, _count), _payloadLength);
        if (!_anyFromRam)
        {
            _staging.AsSpan(0, _payloadLength).CopyTo(output[pos..]);
            writer.Advance(pos + _payloadLength);
            context.Complete();
            return;
        }

        int staged = 0;
        for (int i = 0; i < _count; i++)
        {
            int length = _lengths[i];
            if (_fromRam[i])
            {
                _ram.Page(_pfns[i]).CopyTo(output[pos..]);
            }
            else if (length > 0)
            {
                _staging.AsSpan(staged, length).CopyTo(output[pos..]);
                staged += length;
            }

            pos += length;
        }

        writer.Advance(pos);
        context.Complete();
    }
}
