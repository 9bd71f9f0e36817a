using K4os.Compression.LZ4;
using Migration.Shared.Guest;

namespace Migration.Shared.Transport;

/// <summary>How one page travels. Values match the wire enum.</summary>
public enum PageEncodingKind
{
    Zero = 0,
    Raw = 1,
    Lz4 = 2,

    /// <summary>A delta against the copy the target holds (<see cref="DeltaPayload"/>, <see cref="Xbzrle"/>).</summary>
    Delta = 3,
}

/// <summary>
/// Encodes a page for the wire and decodes it into target RAM. Zero pages travel as an index only; LZ4 is used only
/// when it saves at least an eighth of the page (otherwise the decode cost buys nothing), else the page goes raw.
/// </summary>
public static class PageCodec
{
    /// <summary>An LZ4 block is kept only if it is at most this long.</summary>
    public const int Lz4KeepThreshold = PageGeometry.PageSize - (PageGeometry.PageSize / 8);

    /// <summary>Worst-case bytes one encoded page needs in an output buffer.</summary>
    public static int MaxEncodedLength { get; } =
        Math.Max(PageGeometry.PageSize, LZ4Codec.MaximumOutputSize(PageGeometry.PageSize));

    /// <summary>True when every byte is zero (vectorised by the runtime).</summary>
    public static bool IsZero(ReadOnlySpan<byte> page) => page.IndexOfAnyExcept((byte)0) < 0;

    /// <summary>
    /// Decides how <paramref name="page"/> travels, copying nothing raw: zero (no bytes), LZ4 (the block is written to
    /// <paramref name="lz4Output"/>) or raw (<see cref="PageGeometry.PageSize"/> bytes, still only in the page). The
    /// source's sender copies raw pages from RAM straight into the outgoing message itself.
    /// </summary>
    public static (PageEncodingKind Kind, int Length) Classify(ReadOnlySpan<byte> page, Span<byte> lz4Output,
        bool compress)
    {
        if (IsZero(page))
        {
            return (PageEncodingKind.Zero, 0);
        }

        if (compress)
        {
            int n = LZ4Codec.Encode(page, lz4Output, LZ4Level.L00_FAST);
            if (n > 0 && n <= Lz4KeepThreshold)
            {
                return (PageEncodingKind.Lz4, n);
            }
        }

        return (PageEncodingKind.Raw, PageGeometry.PageSize);
    }

    /// <summary>
    /// Encodes <paramref name="page"/> into <paramref name="output"/>; returns the encoding and bytes written
    /// (<see cref="Classify"/>, with a raw page copied to the output too).
    /// </summary>
    public static (PageEncodingKind Kind, int Length) Encode(ReadOnlySpan<byte> page, Span<byte> output, bool compress)
    {
        var encoded = Classify(page, output, compress);
        if (encoded.Kind == PageEncodingKind.Raw)
        {
            page.CopyTo(output);
        }

        return encoded;
    }

    /// <summary>
    /// Decodes one page's payload into <paramref name="page"/>. Returns null on success, else why the payload is bad
    /// (the caller turns that into a protocol error naming the page).
    /// </summary>
    public static ProtocolError? Decode(PageEncodingKind kind, ReadOnlySpan<byte> payload, Span<byte> page)
    {
        switch (kind)
        {
            case PageEncodingKind.Zero:
                if (!payload.IsEmpty)
                {
                    return Bad($"zero page carries {payload.Length} payload bytes");
                }

                page.Clear();
                return null;
            case PageEncodingKind.Raw:
                if (payload.Length != PageGeometry.PageSize)
                {
                    return Bad($"raw page has {payload.Length} bytes, expected {PageGeometry.PageSize}");
                }

                payload.CopyTo(page);
                return null;
            case PageEncodingKind.Lz4:
                if (payload.IsEmpty || payload.Length > MaxEncodedLength)
                {
                    return Bad($"LZ4 page has {payload.Length} bytes");
                }

                int n = LZ4Codec.Decode(payload, page);
                return n == PageGeometry.PageSize
                    ? null
                    : Bad($"LZ4 payload is corrupt (decoded to {n} bytes, expected {PageGeometry.PageSize})");
            case PageEncodingKind.Delta:
                // Only the receiver can decode one: it must first check that the page holds the delta's base.
                return Bad("a delta page is decoded against its base (the receiver's job)");
            default:
                return Bad($"unknown page encoding {(int)kind}");
        }
    }

    private static ProtocolError Bad(string detail) => new(ProtocolErrorKind.BadPage, detail);
}
