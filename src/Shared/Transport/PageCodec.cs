using K4os.Compression.LZ4;
using Migration.Shared.Guest;

namespace Migration.Shared.Transport;

/// <summary>How one page travels. Values match the wire enum.</summary>
public enum PageEncodingKind
{
    Zero = 0,
    Raw = 1,
    Lz4 = 2,
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
    /// LZ4-compresses <paramref name="page"/> into <paramref name="output"/>; returns the block's length if it is worth
    /// keeping (at most <see cref="Lz4KeepThreshold"/>), else 0 and the page should go raw.
    /// </summary>
    public static int TryCompress(ReadOnlySpan<byte> page, Span<byte> output)
    {
        int n = LZ4Codec.Encode(page, output, LZ4Level.L00_FAST);
        return n > 0 && n <= Lz4KeepThreshold ? n : 0;
    }

    /// <summary>
    /// Encodes <paramref name="page"/> into <paramref name="output"/>; returns the encoding and bytes written.
    /// </summary>
    public static (PageEncodingKind Kind, int Length) Encode(ReadOnlySpan<byte> page, Span<byte> output, bool compress)
    {
        if (IsZero(page))
        {
            return (PageEncodingKind.Zero, 0);
        }

        if (compress && TryCompress(page, output) is > 0 and int n)
        {
            return (PageEncodingKind.Lz4, n);
        }

        page.CopyTo(output);
        return (PageEncodingKind.Raw, PageGeometry.PageSize);
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
            default:
                return Bad($"unknown page encoding {(int)kind}");
        }
    }

    private static ProtocolError Bad(string detail) => new(ProtocolErrorKind.BadPage, detail);
}
