using System.Buffers.Binary;
using Migration.Shared.Balloon;

namespace Migration.Shared.Tests.Balloon;

public sealed class BalloonWireTests
{
    private const long RamPages = 8192; // 32 MiB

    public static TheoryData<BalloonEncoding> Encodings =>
        [BalloonEncoding.PageNumbers, BalloonEncoding.Bitmap, BalloonEncoding.Chunks];

    [Theory]
    [MemberData(nameof(Encodings))]
    public void RoundTrip_GivesSortedMergedRanges(BalloonEncoding encoding)
    {
        PageRange[] ranges = [new(3, 2), new(5, 1), new(100, 37), new(8191, 1)];
        foreach (var queue in new[] { BalloonVq.Inflate, BalloonVq.Deflate })
        {
            var buffer = BalloonWire.Encode(encoding, ranges, queue);
            var got = new List<PageRange>();
            Assert.Null(BalloonWire.Decode(encoding, buffer, queue, RamPages, got));
            Assert.Equal([new PageRange(3, 3), new PageRange(100, 37), new PageRange(8191, 1)], got);
        }
    }

    [Fact]
    public void PageNumbers_UnsortedAdjacentNumbersMergeIntoOneRange()
    {
        var buffer = Pfns(9, 7, 5, 6, 8, 20);
        var got = new List<PageRange>();
        Assert.Null(BalloonWire.Decode(BalloonEncoding.PageNumbers, buffer, BalloonVq.Inflate, RamPages, got));
        Assert.Equal([new PageRange(5, 5), new PageRange(20, 1)], got);
    }

    [Fact]
    public void Bitmap_WholeGiBSpanDecodesAsOneRange()
    {
        const long gib = 1L << 18;
        var buffer = BalloonWire.Encode(BalloonEncoding.Bitmap, [new PageRange(0, gib)], BalloonVq.Inflate);
        Assert.Equal(BalloonWire.BitmapHeaderBytes + BalloonWire.BitmapBytesPerGiB, buffer.Length);
        var got = new List<PageRange>();
        Assert.Null(BalloonWire.Decode(BalloonEncoding.Bitmap, buffer, BalloonVq.Inflate, gib, got));
        Assert.Equal([new PageRange(0, gib)], got);
    }

    public static TheoryData<byte[], string> Rogue => new()
    {
        { [], "0 bytes" }, // empty
        { new byte[6], "6 bytes" }, // a torn page number
        { new byte[257 * 4], "1028 bytes" }, // more than 256 page numbers
        { Pfns(1, RamPages), "outside guest RAM" },
        { Pfns(4, 5, 4), "named twice" },
    };

    [Theory]
    [MemberData(nameof(Rogue))]
    public void PageNumbers_RogueBuffersAreRejected(byte[] buffer, string expected) =>
        Assert.Contains(expected, Reject(BalloonEncoding.PageNumbers, buffer), StringComparison.Ordinal);

    [Fact]
    public void Bitmap_RogueHeadersAreRejected()
    {
        var good = BalloonWire.Encode(BalloonEncoding.Bitmap, [new PageRange(64, 64)], BalloonVq.Inflate);
        Assert.Contains("shorter than", Reject(BalloonEncoding.Bitmap, good.AsSpan(0, 20).ToArray()));
        Assert.Contains("command 0 on the deflate", Reject(BalloonEncoding.Bitmap, good, BalloonVq.Deflate));

        var shift = (byte[])good.Clone();
        BinaryPrimitives.WriteUInt16LittleEndian(shift.AsSpan(2), 21);
        Assert.Contains("2^21-byte pages", Reject(BalloonEncoding.Bitmap, shift));

        var lying = (byte[])good.Clone();
        BinaryPrimitives.WriteUInt64LittleEndian(lying.AsSpan(24), 4096);
        Assert.Contains("saying 4096 bytes", Reject(BalloonEncoding.Bitmap, lying));

        // The last word may run past RAM (RAM need not be a multiple of 64 pages) with its bits there clear; a set
        // bit past RAM, or a whole word past it, is refused.
        var tail = BalloonWire.Encode(BalloonEncoding.Bitmap, [new PageRange(RamPages - 64, 56)], BalloonVq.Inflate);
        var got = new List<PageRange>();
        Assert.Null(BalloonWire.Decode(BalloonEncoding.Bitmap, tail, BalloonVq.Inflate, RamPages - 8, got));
        Assert.Equal([new PageRange(RamPages - 64, 56)], got);
        var longer = BalloonWire.Encode(BalloonEncoding.Bitmap, [new PageRange(RamPages - 64, 64)],
            BalloonVq.Inflate);
        Assert.Contains($"names page {RamPages - 8}, outside guest RAM",
            Reject(BalloonEncoding.Bitmap, longer, ramPages: RamPages - 8));
        var wordPast = BalloonWire.Encode(BalloonEncoding.Bitmap, [new PageRange(RamPages - 128, 1),
            new PageRange(RamPages - 1, 1)], BalloonVq.Inflate);
        Assert.Contains("longer than guest RAM", Reject(BalloonEncoding.Bitmap, wordPast, ramPages: RamPages - 64));

        var past = (byte[])good.Clone();
        BinaryPrimitives.WriteUInt64LittleEndian(past.AsSpan(16), (ulong)RamPages);
        Assert.Contains("longer than guest RAM", Reject(BalloonEncoding.Bitmap, past));

        var blank = new byte[BalloonWire.BitmapHeaderBytes + 8];
        BinaryPrimitives.WriteUInt16LittleEndian(blank.AsSpan(2), 12);
        BinaryPrimitives.WriteUInt64LittleEndian(blank.AsSpan(24), 8);
        Assert.Contains("names no page", Reject(BalloonEncoding.Bitmap, blank));
    }

    [Fact]
    public void Chunks_RogueChunksAreRejected()
    {
        Assert.Contains("at least one chunk", Reject(BalloonEncoding.Chunks, new byte[4]));
        Assert.Contains("saying 2 chunks", Reject(BalloonEncoding.Chunks, Chunks(2, (1, 1))));
        Assert.Contains("has no pages", Reject(BalloonEncoding.Chunks, Chunks(1, (10, 0))));
        Assert.Contains("outside guest RAM", Reject(BalloonEncoding.Chunks, Chunks(1, (RamPages - 1, 2))));
        Assert.Contains("outside guest RAM", Reject(BalloonEncoding.Chunks, Chunks(1, (1, ulong.MaxValue))));
        Assert.Contains("named twice", Reject(BalloonEncoding.Chunks, Chunks(2, (10, 5), (14, 2))));
        var flood = new byte[BalloonWire.ChunkHeaderBytes + (4091 * BalloonWire.ChunkBytes)];
        BinaryPrimitives.WriteUInt32LittleEndian(flood, 4091);
        Assert.Contains("saying 4091 chunks", Reject(BalloonEncoding.Chunks, flood));
    }

    [Fact]
    public void Fits_FollowsEachFormatsLimit()
    {
        Assert.True(BalloonWire.Fits(BalloonEncoding.PageNumbers, 256, 256, 1L << 30));
        Assert.False(BalloonWire.Fits(BalloonEncoding.PageNumbers, 257, 1, 257));
        Assert.True(BalloonWire.Fits(BalloonEncoding.Bitmap, 2, 2, BalloonWire.MaxBitmapSpanPages - 64));
        Assert.False(BalloonWire.Fits(BalloonEncoding.Bitmap, 2, 2, BalloonWire.MaxBitmapSpanPages));
        Assert.True(BalloonWire.Fits(BalloonEncoding.Chunks, 1L << 30, BalloonWire.MaxChunks, 1L << 40));
        Assert.False(BalloonWire.Fits(BalloonEncoding.Chunks, 4091, BalloonWire.MaxChunks + 1, 4091));
    }

    [Fact]
    public void Events_RoundTripAndRejectUnknown()
    {
        Assert.Null(BalloonEventWire.Decode(BalloonEventWire.Pressure(Shared.Guest.Kernel.MemoryPressure.Critical),
            out var type, out uint level));
        Assert.Equal((BalloonGuestEvent.Pressure, 3u), (type, level));
        Assert.Contains("level 9", BalloonEventWire.Decode(BalloonEventWire.Encode(BalloonGuestEvent.Pressure, 9),
            out _, out _), StringComparison.Ordinal);
        Assert.Contains("unknown type 7", BalloonEventWire.Decode(BalloonEventWire.Encode((BalloonGuestEvent)7, 0),
            out _, out _), StringComparison.Ordinal);
        Assert.Contains("4 bytes", BalloonEventWire.Decode(new byte[4], out _, out _), StringComparison.Ordinal);
    }

    private static string Reject(BalloonEncoding encoding, byte[] buffer, BalloonVq queue = BalloonVq.Inflate,
        long ramPages = RamPages)
    {
        var into = new List<PageRange> { new(0, 1) };
        string? error = BalloonWire.Decode(encoding, buffer, queue, ramPages, into);
        Assert.NotNull(error);
        Assert.Empty(into);
        return error;
    }

    private static byte[] Pfns(params long[] pfns)
    {
        var buffer = new byte[pfns.Length * 4];
        for (int i = 0; i < pfns.Length; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(i * 4), (uint)pfns[i]);
        }

        return buffer;
    }

    private static byte[] Chunks(uint count, params (ulong Base, ulong Size)[] chunks)
    {
        var buffer = new byte[BalloonWire.ChunkHeaderBytes + (chunks.Length * BalloonWire.ChunkBytes)];
        BinaryPrimitives.WriteUInt32LittleEndian(buffer, count);
        for (int i = 0; i < chunks.Length; i++)
        {
            var at = buffer.AsSpan(BalloonWire.ChunkHeaderBytes + (i * BalloonWire.ChunkBytes));
            BinaryPrimitives.WriteUInt64LittleEndian(at, chunks[i].Base);
            BinaryPrimitives.WriteUInt64LittleEndian(at[8..], chunks[i].Size);
        }

        return buffer;
    }
}
