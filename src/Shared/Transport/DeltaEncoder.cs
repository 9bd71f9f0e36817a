using System.Runtime.CompilerServices;
using Migration.Shared.Guest;

namespace Migration.Shared.Transport;

/// <summary>
/// One channel's side of delta pages: encodes each page it sends through the shared <see cref="DeltaPageCache"/>, as
/// a delta against the copy the cache holds when that is smaller than the page, else whole (raw or LZ4), and keeps the
/// cache equal to what the target holds (rule C3, docs/delta-pages.md).
/// </summary>
/// <remarks>
/// <para>The caller reads the page from guest RAM once, into the slot it hands over, after the page left the migration
/// bitmap; everything here works on that copy. The cache takes exactly those bytes, never a second read of RAM (the
/// running guest may have written in between: then the target would hold one copy and the cache another; the write
/// itself is logged and the page goes again next round).</para>
/// <para>The bulk pass (round 0) sends no delta (nothing was sent before it) and fills only the cache's free slots:
/// QEMU's XBZRLE leaves the cache alone until the bulk pass is over, and then the first resend of every page is a
/// miss, the hot set going whole twice; filling free slots costs a copy for at most the cache's size of pages, evicts
/// nothing, and when the cache holds the hot set the first resend is already a delta (on the README's hot-set guest,
/// with a 256 MiB cache, half the bytes on the wire). A page sent as zero turns its cache entry, if it has one, into a
/// zero page (no bytes kept), so a delta may follow against zeros; it evicts nothing.</para>
/// <para>A delta goes only on the channel that carried its base: each stream is applied in order on the target, so the
/// base is there before the delta arrives, while the engine's round barrier only says that a round was written, not
/// that the target applied it. The payload names its base's round (<see cref="DeltaPayload"/>) and the target applies
/// it only onto exactly that copy.</para>
/// </remarks>
internal sealed class DeltaEncoder
{
    /// <summary>A delta is kept only if its payload (base round included) is at most this long.</summary>
    public const int KeepThreshold = PageCodec.Lz4KeepThreshold;

    private static readonly byte[] ZeroPage = new byte[PageGeometry.PageSize];

    private readonly DeltaPageCache _cache;
    private readonly IDeltaDefences _defences;
    private readonly byte[] _scratch = GC.AllocateUninitializedArray<byte>(PageCodec.MaxEncodedLength, pinned: true);

    public DeltaEncoder(DeltaPageCache cache, int channel, IDeltaDefences defences)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentNullException.ThrowIfNull(defences);
        _cache = cache;
        _defences = defences;
        Channel = channel;
    }

    /// <summary>The channel this encoder's pages travel on (cache entries remember it).</summary>
    public int Channel { get; }

    /// <summary>Holds the cache for one batch (a resize waits until it is disposed).</summary>
    public DeltaPageCache.Lease Enter() => _cache.Enter();

    /// <summary>
    /// Encodes one page. On entry <paramref name="slot"/> (at least <see cref="PageCodec.MaxEncodedLength"/> bytes)
    /// starts with the page as read from RAM; on return it starts with the payload: nothing (zero), the page (raw),
    /// its LZ4 block, or its delta. Counts the page in <paramref name="tally"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public (PageEncodingKind Kind, int Length) Encode(in DeltaPageCache.Lease lease, long pfn, uint round,
        Span<byte> slot, bool compress, ref PageTally tally)
    {
        var page = slot[..PageGeometry.PageSize];
        if (PageCodec.IsZero(page))
        {
            if (round > 0 && _defences.WholeSendReplacesCachedCopy)
            {
                lock (lease.LockFor(pfn))
                {
                    lease.PutZero(pfn, round, Channel);
                }
            }

            tally.Zero++;
            return (PageEncodingKind.Zero, 0);
        }

        if (round == 0)
        {
            lock (lease.LockFor(pfn))
            {
                if (lease.HasFreeSlot(pfn))
                {
                    lease.Put(pfn, round, Channel, page); // fills free slots only: round 0 evicts nothing
                }
            }

            return Whole(slot, compress, ref tally);
        }

        lock (lease.LockFor(pfn))
        {
            bool cached = lease.TryGet(pfn, out var entry);
            if (cached && (entry.Channel == Channel || !_defences.DeltaOnlyOnBaseChannel))
            {
                int prefix = DeltaPayload.WriteBase(_scratch, entry.Round);
                int runs = Xbzrle.Encode(entry.Zero ? ZeroPage : entry.Bytes, page,
                    _scratch.AsSpan(prefix, KeepThreshold - prefix));
                if (runs >= 0)
                {
                    lease.Put(pfn, round, Channel, page); // the bytes just encoded (C3)
                    int length = prefix + runs;
                    _scratch.AsSpan(0, length).CopyTo(slot);
                    tally.Delta++;
                    tally.DeltaBytesSaved += PageGeometry.PageSize - length;
                    return (PageEncodingKind.Delta, length);
                }

                tally.DeltaOverflows++;
            }
            else
            {
                tally.DeltaMisses++;
            }

            if (!cached || _defences.WholeSendReplacesCachedCopy)
            {
                lease.Put(pfn, round, Channel, page);
            }
        }

        return Whole(slot, compress, ref tally);
    }

    /// <summary>
    /// Runs every path of the encoder (misses, hits, overflows, zero pages, a resize) on a scratch cache, often enough
    /// for the JIT to promote it. The source's tiered JIT otherwise ran the first round that used deltas as first-call
    /// code: 7,000-8,000 misses took 120-190 ms there against 40 ms raw, and 10-16 ms once warm.
    /// </summary>
    public static void WarmUp()
    {
        const int Pages = 64;
        using var cache = new DeltaPageCache(PageGeometry.PageSize * Pages);
        var encoder = new DeltaEncoder(cache, 0, StandardDeltaDefences.Instance);
        var pages = new byte[Pages * PageGeometry.PageSize];
        var slot = new byte[PageCodec.MaxEncodedLength];
        var tally = new PageTally();
        var random = new Random(1);
        random.NextBytes(pages);
        for (uint round = 0; round <= 8; round++)
        {
            if (round == 5)
            {
                cache.Resize(PageGeometry.PageSize * Pages / 2);
            }

            using var lease = encoder.Enter();
            for (int p = 0; p < Pages; p++)
            {
                var page = pages.AsSpan(p * PageGeometry.PageSize, PageGeometry.PageSize);
                switch ((p + (int)round) % 8)
                {
                    case 0: random.NextBytes(page); break;                     // an overflow
                    case 1: page.Clear(); break;                               // a zero page
                    default: page[random.Next(page.Length)] ^= 0x5A; break;    // a small change: a delta
                }

                page.CopyTo(slot);
                _ = encoder.Encode(lease, p, round, slot, compress: round % 2 == 0, ref tally);
            }
        }
    }

    /// <summary>The page goes whole: LZ4 when that saves an eighth (and compression is on), else raw.</summary>
    private (PageEncodingKind Kind, int Length) Whole(Span<byte> slot, bool compress, ref PageTally tally)
    {
        var (kind, length) = PageCodec.Classify(slot[..PageGeometry.PageSize], _scratch, compress);
        if (kind == PageEncodingKind.Lz4)
        {
            _scratch.AsSpan(0, length).CopyTo(slot);
            tally.Lz4++;
        }
        else
        {
            tally.Raw++;
        }

        return (kind, length);
    }
}

/// <summary>
/// The decisions that keep a delta's base on the target the copy the source encoded against, as a seam. Production
/// uses <see cref="StandardDeltaDefences"/>, which holds only the correct rules; the race fuzzer's mutants (R25, R26)
/// remove one each.
/// </summary>
internal interface IDeltaDefences
{
    /// <summary>
    /// C3: a page sent whole (raw, LZ4 or zero: a miss, an overflow, a page now zero) replaces the copy the cache holds
    /// of it, so the next delta is made against the copy the target holds now.
    /// </summary>
    bool WholeSendReplacesCachedCopy { get; }

    /// <summary>A delta travels only on the channel that carried its base, so the target has the base first.</summary>
    bool DeltaOnlyOnBaseChannel { get; }
}

/// <summary>The delta rules as docs/design.md states them.</summary>
internal sealed class StandardDeltaDefences : IDeltaDefences
{
    public static readonly StandardDeltaDefences Instance = new();

    public bool WholeSendReplacesCachedCopy => true;

    public bool DeltaOnlyOnBaseChannel => true;
}

/// <summary>
/// The payload of a <c>PAGE_ENCODING_DELTA</c> page: the round of the copy it was encoded against (its base), in
/// ULEB128, then the <see cref="Xbzrle"/> runs.
/// </summary>
public static class DeltaPayload
{
    /// <summary>The base round takes at most this many bytes.</summary>
    public const int MaxBaseBytes = 5;

    /// <summary>Writes <paramref name="baseRound"/>; returns the bytes written.</summary>
    public static int WriteBase(Span<byte> output, uint baseRound)
    {
        int n = 0;
        while (baseRound >= 0x80)
        {
            output[n++] = (byte)(baseRound | 0x80);
            baseRound >>= 7;
        }

        output[n++] = (byte)baseRound;
        return n;
    }

    /// <summary>
    /// Splits a delta payload into its base round and its runs (not checked here: <see cref="Xbzrle.Validate"/>).
    /// Null when the base round reads; else why not.
    /// </summary>
    public static string? Read(ReadOnlySpan<byte> payload, out uint baseRound, out int runsOffset)
    {
        baseRound = 0;
        runsOffset = 0;
        ulong value = 0;
        for (int i = 0; i < MaxBaseBytes; i++)
        {
            if (i == payload.Length)
            {
                return payload.IsEmpty ? "the delta is empty (no base round)" : "the delta's base round is cut off";
            }

            value |= (ulong)(payload[i] & 0x7f) << (7 * i);
            if (payload[i] < 0x80)
            {
                if (value > uint.MaxValue)
                {
                    return $"the delta's base round {value} is out of range";
                }

                baseRound = (uint)value;
                runsOffset = i + 1;
                return null;
            }
        }

        return $"the delta's base round takes more than {MaxBaseBytes} bytes";
    }
}

/// <summary>What one batch's pages became, by encoding, and what the delta cache did for them.</summary>
internal struct PageTally
{
    public long Zero;
    public long Raw;
    public long Lz4;

    /// <summary>Pages sent as a delta: cache hits.</summary>
    public long Delta;

    /// <summary>Pages sent whole after round 0 that the cache held no usable copy of.</summary>
    public long DeltaMisses;

    /// <summary>Pages the cache held whose delta would not have saved an eighth of the page: sent whole.</summary>
    public long DeltaOverflows;

    /// <summary>Payload bytes the deltas saved against sending those pages raw.</summary>
    public long DeltaBytesSaved;
}
