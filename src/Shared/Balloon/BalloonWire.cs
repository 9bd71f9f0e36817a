using System.Buffers.Binary;
using System.Numerics;

namespace Migration.Shared.Balloon;

/// <summary>
/// The three inflate/deflate buffer formats, as bytes: what the driver writes into a buffer and the device parses. All
/// little-endian, as virtio 1.0 requires.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>Page numbers (the spec): <c>le32 pfn[n]</c>, 1 &lt;= n &lt;= 256 (Linux's VIRTIO_BALLOON_ARRAY_PFNS_MAX).</item>
/// <item>
/// Bitmap (Liang Li, v3): a 32-byte header <c>{le16 cmd, le16 page_shift, le16 flag, le16 reserved, le64 req_id,
/// le64 start_pfn, le64 bmap_len}</c>, then <c>bmap_len</c> bytes of bitmap, bit i standing for page start_pfn + i;
/// at most 32 bitmaps of 32 KiB (each covers 1 GiB), so one buffer spans up to 32 GiB.
/// </item>
/// <item>Chunks (Wei Wang, v9): <c>le32 count</c>, then count x <c>{le64 base, le64 size}</c> in 4 KiB pages,
/// 1 &lt;= count &lt;= 4090.</item>
/// </list>
/// The device checks every field and every page against guest RAM; <see cref="Decode"/> returns the pages as sorted,
/// merged ranges (the host then makes one discard call per range, as Firecracker does for PFN arrays), or an error.
/// </remarks>
public static class BalloonWire
{
    public const int MaxPageNumbers = 256;
    public const int BitmapHeaderBytes = 32;
    public const int BitmapBytesPerGiB = 32 * 1024;
    public const int MaxBitmaps = 32;
    public const int MaxBitmapBytes = MaxBitmaps * BitmapBytesPerGiB;
    public const long MaxBitmapSpanPages = MaxBitmapBytes * 8L;
    public const int MaxChunks = 4090;
    public const int ChunkHeaderBytes = 4;
    public const int ChunkBytes = 16;
    public const ushort CmdInflate = 0;
    public const ushort CmdDeflate = 1;
    private const ushort PageShift = 12;

    /// <summary>
    /// Encodes <paramref name="ranges"/> (sorted, disjoint) as one buffer; the caller keeps within the format's
    /// limits (<see cref="Fits"/>).
    /// </summary>
    public static byte[] Encode(BalloonEncoding encoding, IReadOnlyList<PageRange> ranges, BalloonVq queue,
        ulong requestId = 0)
    {
        ArgumentNullException.ThrowIfNull(ranges);
        return encoding switch
        {
            BalloonEncoding.PageNumbers => EncodePageNumbers(ranges),
            BalloonEncoding.Bitmap => EncodeBitmap(ranges, queue, requestId),
            BalloonEncoding.Chunks => EncodeChunks(ranges),
            _ => throw new ArgumentOutOfRangeException(nameof(encoding), encoding, "unknown encoding"),
        };
    }

    /// <summary>Whether one buffer of <paramref name="encoding"/> can carry these sorted ranges.</summary>
    public static bool Fits(BalloonEncoding encoding, long pages, int ranges, long spanPages) => encoding switch
    {
        BalloonEncoding.PageNumbers => pages <= MaxPageNumbers,
        BalloonEncoding.Bitmap => spanPages + 63 <= MaxBitmapSpanPages,
        BalloonEncoding.Chunks => ranges <= MaxChunks,
        _ => false,
    };

    /// <summary>
    /// Parses one buffer from <paramref name="queue"/> into sorted, merged, in-RAM ranges. Returns null when it is
    /// well formed, else what is wrong with it (and <paramref name="into"/> is left empty).
    /// </summary>
    public static string? Decode(BalloonEncoding encoding, ReadOnlySpan<byte> buffer, BalloonVq queue,
        long ramPages, List<PageRange> into)
    {
        ArgumentNullException.ThrowIfNull(into);
        into.Clear();
        string? error = encoding switch
        {
            BalloonEncoding.PageNumbers => DecodePageNumbers(buffer, ramPages, into),
            BalloonEncoding.Bitmap => DecodeBitmap(buffer, queue, ramPages, into),
            BalloonEncoding.Chunks => DecodeChunks(buffer, ramPages, into),
            _ => $"unknown encoding {(int)encoding}",
        };
        error ??= into.Count == 0 ? "the request names no page" : PageRange.SortAndMerge(into);
        if (error is not null)
        {
            into.Clear();
        }

        return error;
    }

    private static byte[] EncodePageNumbers(IReadOnlyList<PageRange> ranges)
    {
        long pages = ranges.Sum(r => r.Count);
        var buffer = new byte[checked((int)pages * 4)];
        int at = 0;
        foreach (var r in ranges)
        {
            for (long p = r.First; p < r.End; p++)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(at), checked((uint)p));
                at += 4;
            }
        }

        return buffer;
    }

    private static byte[] EncodeBitmap(IReadOnlyList<PageRange> ranges, BalloonVq queue, ulong requestId)
    {
        long start = ranges.Count == 0 ? 0 : ranges[0].First & ~63L;
        long end = ranges.Count == 0 ? 0 : ranges[^1].End;
        int bytes = checked((int)(((end - start + 63) >> 6) << 3));
        var buffer = new byte[BitmapHeaderBytes + bytes];
        var header = buffer.AsSpan();
        BinaryPrimitives.WriteUInt16LittleEndian(header, queue == BalloonVq.Deflate ? CmdDeflate : CmdInflate);
        BinaryPrimitives.WriteUInt16LittleEndian(header[2..], PageShift);
        BinaryPrimitives.WriteUInt64LittleEndian(header[8..], requestId);
        BinaryPrimitives.WriteUInt64LittleEndian(header[16..], (ulong)start);
        BinaryPrimitives.WriteUInt64LittleEndian(header[24..], (ulong)bytes);
        var map = buffer.AsSpan(BitmapHeaderBytes);
        foreach (var r in ranges)
        {
            for (long p = r.First - start, e = r.End - start; p < e;)
            {
                int bit = (int)(p & 7);
                if (bit == 0 && e - p >= 8)
                {
                    long whole = (e - p) >> 3;
                    map.Slice((int)(p >> 3), (int)whole).Fill(0xFF);
                    p += whole << 3;
                    continue;
                }

                map[(int)(p >> 3)] |= (byte)(1 << bit);
                p++;
            }
        }

        return buffer;
    }

    private static byte[] EncodeChunks(IReadOnlyList<PageRange> ranges)
    {
        var buffer = new byte[ChunkHeaderBytes + (ranges.Count * ChunkBytes)];
        BinaryPrimitives.WriteUInt32LittleEndian(buffer, (uint)ranges.Count);
        for (int i = 0; i < ranges.Count; i++)
        {
            var at = buffer.AsSpan(ChunkHeaderBytes + (i * ChunkBytes));
            BinaryPrimitives.WriteUInt64LittleEndian(at, (ulong)ranges[i].First);
            BinaryPrimitives.WriteUInt64LittleEndian(at[8..], (ulong)ranges[i].Count);
        }

        return buffer;
    }

    private static string? DecodePageNumbers(ReadOnlySpan<byte> buffer, long ramPages, List<PageRange> into)
    {
        if (buffer.Length == 0 || buffer.Length % 4 != 0 || buffer.Length > MaxPageNumbers * 4)
        {
            return $"a page-number buffer of {buffer.Length} bytes (1 to {MaxPageNumbers} le32 page numbers expected)";
        }

        Span<uint> pfns = stackalloc uint[buffer.Length / 4];
        for (int i = 0; i < pfns.Length; i++)
        {
            pfns[i] = BinaryPrimitives.ReadUInt32LittleEndian(buffer[(i * 4)..]);
            if (pfns[i] >= ramPages)
            {
                return $"page {pfns[i]} is outside guest RAM ({ramPages} pages)";
            }
        }

        pfns.Sort();
        for (int i = 0; i < pfns.Length;)
        {
            int j = i + 1;
            while (j < pfns.Length && pfns[j] == pfns[j - 1] + 1)
            {
                j++;
            }

            if (j < pfns.Length && pfns[j] == pfns[j - 1])
            {
                return $"page {pfns[j]} is named twice in one request";
            }

            into.Add(new PageRange(pfns[i], j - i));
            i = j;
        }

        return null;
    }

    private static string? DecodeBitmap(ReadOnlySpan<byte> buffer, BalloonVq queue, long ramPages,
        List<PageRange> into)
    {
        if (buffer.Length < BitmapHeaderBytes)
        {
            return $"a bitmap buffer of {buffer.Length} bytes, shorter than its {BitmapHeaderBytes}-byte header";
        }

        ushort cmd = BinaryPrimitives.ReadUInt16LittleEndian(buffer);
        ushort shift = BinaryPrimitives.ReadUInt16LittleEndian(buffer[2..]);
        ulong start = BinaryPrimitives.ReadUInt64LittleEndian(buffer[16..]);
        ulong length = BinaryPrimitives.ReadUInt64LittleEndian(buffer[24..]);
        ushort expected = queue == BalloonVq.Deflate ? CmdDeflate : CmdInflate;
        if (cmd != expected)
        {
            return $"a bitmap with command {cmd} on the {queue.ToString().ToLowerInvariant()} queue";
        }

        if (shift != PageShift)
        {
            return $"a bitmap of 2^{shift}-byte pages (only 4 KiB pages, shift {PageShift}, are supported)";
        }

        if (length != (ulong)(buffer.Length - BitmapHeaderBytes) || length % 8 != 0 || length > MaxBitmapBytes)
        {
            return $"a bitmap header saying {length} bytes in a buffer carrying {buffer.Length - BitmapHeaderBytes} " +
                $"(a multiple of 8, at most {MaxBitmapBytes})";
        }

        // The bitmap is whole 64-bit words, so its last word may run past the end of RAM (by fewer than 64 pages); a
        // bitmap longer than that is refused, and a set bit past RAM below.
        if (start >= (ulong)ramPages || length * 8 > (((ulong)ramPages - start + 63) & ~63UL))
        {
            return $"a bitmap of {length * 8} pages from page {start} is longer than guest RAM ({ramPages} pages)";
        }

        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(buffer[BitmapHeaderBytes..]);
        long runStart = -1;
        for (int w = 0; w < words.Length; w++)
        {
            ulong word = BitConverter.IsLittleEndian ? words[w] : BinaryPrimitives.ReverseEndianness(words[w]);
            long basePfn = (long)start + ((long)w << 6);
            if (word == ulong.MaxValue)
            {
                runStart = runStart < 0 ? basePfn : runStart;
                continue;
            }

            int bit = 0;
            while (bit < 64)
            {
                ulong rest = word >> bit;
                if (runStart >= 0)
                {
                    int ones = BitOperations.TrailingZeroCount(~rest);
                    if (bit + ones < 64)
                    {
                        into.Add(new PageRange(runStart, basePfn + bit + ones - runStart));
                        runStart = -1;
                    }

                    bit += ones;
                }
                else
                {
                    if (rest == 0)
                    {
                        break;
                    }

                    bit += BitOperations.TrailingZeroCount(rest);
                    runStart = basePfn + bit;
                }
            }
        }

        if (runStart >= 0)
        {
            into.Add(new PageRange(runStart, (long)start + ((long)words.Length << 6) - runStart));
        }

        return into.Count > 0 && into[^1].End > ramPages
            ? $"the bitmap names page {Math.Max(into[^1].First, ramPages)}, outside guest RAM ({ramPages} pages)"
            : null;
    }

    private static string? DecodeChunks(ReadOnlySpan<byte> buffer, long ramPages, List<PageRange> into)
    {
        if (buffer.Length < ChunkHeaderBytes + ChunkBytes)
        {
            return $"a chunk buffer of {buffer.Length} bytes (a le32 count and at least one chunk expected)";
        }

        uint count = BinaryPrimitives.ReadUInt32LittleEndian(buffer);
        if (count is 0 or > MaxChunks || buffer.Length != ChunkHeaderBytes + ((long)count * ChunkBytes))
        {
            return $"a chunk header saying {count} chunks in a buffer of {buffer.Length} bytes (1 to {MaxChunks})";
        }

        for (int i = 0; i < count; i++)
        {
            var at = buffer[(ChunkHeaderBytes + (i * ChunkBytes))..];
            ulong first = BinaryPrimitives.ReadUInt64LittleEndian(at);
            ulong size = BinaryPrimitives.ReadUInt64LittleEndian(at[8..]);
            if (size == 0)
            {
                return $"chunk {i} at page {first} has no pages";
            }

            if (first >= (ulong)ramPages || size > (ulong)ramPages - first)
            {
                return $"chunk {i} [{first}, +{size}) is outside guest RAM ({ramPages} pages)";
            }

            into.Add(new PageRange((long)first, (long)size));
        }

        return null;
    }
}
