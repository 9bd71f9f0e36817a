using System.Buffers.Binary;
using Migration.Shared.Guest;
using Migration.Shared.Transport.Http2;

namespace Migration.Shared.Transport;

/// <summary>
/// One channel's reusable outgoing <c>PageBatch</c>: <see cref="Encode"/> classifies each page of its guest's RAM
/// (<see cref="PageCodec.Classify"/>: zero detection, LZ4 into a pinned staging buffer), then <see cref="Gather"/> lays
/// the gRPC message out as pieces for one gathered write: its prefix and <see cref="PageBatchWire"/> header from a
/// small pinned buffer, then each raw page where it lies in guest RAM (neighbours merged into one piece) and every
/// other payload from the staging buffer. No protobuf object and no copy in user space: the kernel reads raw pages
/// straight out of guest RAM, as QEMU's multifd does.
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
    private readonly byte[] _head; // the gRPC prefix and the batch's header, before the payload
    private readonly GuestRam _ram;
    private readonly DeltaEncoder? _delta;
    private int _count;
    private int _payloadLength;
    private uint _round;

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
        _head = GC.AllocateUninitializedArray<byte>(GrpcPrefix + PageBatchWire.MaxHeaderLength(maxPages),
            pinned: true);
    }

    private const int GrpcPrefix = 5; // compressed flag + big-endian message length

    /// <summary>The most pieces <see cref="Gather"/> lays out for a batch of <paramref name="maxPages"/> pages.</summary>
    public static int MaxPieces(int maxPages) => maxPages + 1;

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
            payload += length;
        }

        _count = pfns.Length;
        _payloadLength = payload;
        _round = round;
        _layout = PageBatchWire.Measure(round, _pfns.AsSpan(0, _count), _kinds.AsSpan(0, _count),
            _lengths.AsSpan(0, _count), payload);
        return tally;
    }

    /// <summary>The gRPC message's length on the wire: its 5-byte prefix and the batch.</summary>
    public int FramedLength => GrpcPrefix + MessageLength;

    /// <summary>
    /// Lays the current batch out as a gRPC message (prefix, header, payload) in <paramref name="pieces"/>, which needs
    /// <see cref="MaxPieces"/> entries; returns how many it used. The pieces point into guest RAM and this batch's pinned
    /// buffers: valid until the next <see cref="Encode"/>.
    /// </summary>
    public unsafe int Gather(Span<IoVector> pieces)
    {
        _head[0] = 0; // not compressed
        BinaryPrimitives.WriteUInt32BigEndian(_head.AsSpan(1), (uint)MessageLength);
        int head = GrpcPrefix + PageBatchWire.WriteHeader(_head.AsSpan(GrpcPrefix), _layout, _round,
            _pfns.AsSpan(0, _count), _kinds.AsSpan(0, _count), _lengths.AsSpan(0, _count), _payloadLength);
        int used = 0;
        fixed (byte* headStart = _head)
        fixed (byte* stagingStart = _staging)
        {
            pieces[used++] = new IoVector(headStart, head);
            byte* staged = stagingStart;
            for (int i = 0; i < _count; i++)
            {
                int length = _lengths[i];
                if (length == 0)
                {
                    continue;
                }

                byte* from = _fromRam[i] ? _ram.PagePointer(_pfns[i]) : staged;
                if (!_fromRam[i])
                {
                    staged += length;
                }

                ref var last = ref pieces[used - 1];
                if (last.Base + last.Length == from)
                {
                    last.Length += (nuint)length; // the page lies right after the previous piece: one piece
                }
                else
                {
                    pieces[used++] = new IoVector(from, length);
                }
            }
        }

        return used;
    }
}
