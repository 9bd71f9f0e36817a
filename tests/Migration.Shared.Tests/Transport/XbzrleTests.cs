using Migration.Shared.Guest;
using Migration.Shared.Transport;

namespace Migration.Shared.Tests.Transport;

/// <summary>
/// The XBZRLE codec: round trips over generated pairs of pages, QEMU's format byte for byte, and every malformed delta
/// refused with the page left as it was.
/// </summary>
public sealed class XbzrleTests
{
    private const int Page = PageGeometry.PageSize;

    /// <summary>A pair of pages as a guest makes them: the new one is the old one with some stretches rewritten.</summary>
    private static (byte[] Old, byte[] New) Pair(Random random, int writes, int maxWrite)
    {
        var old = new byte[Page];
        random.NextBytes(old);
        if (random.Next(4) == 0)
        {
            Array.Clear(old); // a delta against a zero page
        }

        var current = (byte[])old.Clone();
        for (int w = 0; w < writes; w++)
        {
            int length = random.Next(1, maxWrite + 1);
            int at = random.Next(Page - length + 1);
            var span = current.AsSpan(at, length);
            switch (random.Next(3))
            {
                case 0: random.NextBytes(span); break;
                case 1: span.Clear(); break;
                default:
                    for (int i = 0; i < span.Length; i++)
                    {
                        span[i] ^= (byte)(1 << random.Next(8)); // every byte changes, a bit at a time
                    }

                    break;
            }
        }

        return (old, current);
    }

    [Fact]
    public void GeneratedPages_RoundTrip_OrOverflow()
    {
        var random = new Random(2024);
        var output = new byte[Page];
        int overflows = 0;
        for (int run = 0; run < 3000; run++)
        {
            var (old, current) = Pair(random, random.Next(0, 40), random.Next(2) == 0 ? random.Next(1, 600) : 8);
            int limit = random.Next(2) == 0 ? Page : DeltaEncoder.KeepThreshold;
            int n = Xbzrle.Encode(old, current, output.AsSpan(0, limit));
            if (n < 0)
            {
                overflows++;
                continue;
            }

            Assert.Null(Xbzrle.Validate(output.AsSpan(0, n), Page));
            var page = (byte[])old.Clone();
            Assert.Null(Xbzrle.Apply(output.AsSpan(0, n), page));
            Assert.Equal(current, page);
            Assert.Equal(old.AsSpan().SequenceEqual(current), n == 0);
        }

        Assert.InRange(overflows, 1, 2999); // both paths taken
    }

    [Fact]
    public void AnUnchangedPage_EncodesToNothing_AndNothingDecodesToTheSamePage()
    {
        var old = new byte[Page];
        new Random(1).NextBytes(old);
        Assert.Equal(0, Xbzrle.Encode(old, old, new byte[16]));
        var page = (byte[])old.Clone();
        Assert.Null(Xbzrle.Apply([], page));
        Assert.Equal(old, page);
    }

    [Fact]
    public void TheFormat_IsQemus_ZeroRunThenLiteralRun_TrailingZeroRunLeftOut()
    {
        var old = new byte[Page];
        var current = new byte[Page];
        current[0] = 1;        // first zero run is empty
        current[200] = 2;      // zero run of 199: two-byte ULEB128 (0xC7 0x01)
        current[201] = 3;
        var output = new byte[64];
        int n = Xbzrle.Encode(old, current, output);
        Assert.Equal(new byte[] { 0, 1, 1, 0xC7, 0x01, 2, 2, 3 }, output.AsSpan(0, n).ToArray());
    }

    [Fact]
    public void ShortEqualStretches_StayInTheLiteralRun()
    {
        var old = new byte[Page];
        var current = new byte[Page];
        current.AsSpan(10, 3).Fill(9);
        current.AsSpan(15, 3).Fill(9); // two equal bytes between: folded in (one run of 8)
        current.AsSpan(30, 3).Fill(9); // twelve equal bytes between: a run of its own
        var output = new byte[64];
        int n = Xbzrle.Encode(old, current, output);
        Assert.Equal(new byte[] { 10, 8, 9, 9, 9, 0, 0, 9, 9, 9, 12, 3, 9, 9, 9 }, output.AsSpan(0, n).ToArray());
    }

    [Fact]
    public void APageThatChangedEverywhere_Overflows()
    {
        var old = new byte[Page];
        var current = new byte[Page];
        new Random(5).NextBytes(current);
        current.AsSpan().Replace((byte)0, (byte)1); // every byte differs from the zero page
        Assert.Equal(-1, Xbzrle.Encode(old, current, new byte[DeltaEncoder.KeepThreshold]));
        Assert.Equal(-1, Xbzrle.Encode(old, current, new byte[Page])); // QEMU's bound: not even the page's size
    }

    public static TheoryData<byte[], string> Malformed => new()
    {
        { [0], "without its literal run (truncated)" },
        { [0, 3, 1, 2], "has only 2 (truncated)" },
        { [0x80], "cut off (truncated)" },
        { [0, 0x81], "cut off (truncated)" },
        { [0x80, 0x80, 0x01, 1, 1], "more than 2 bytes (an overflowing length)" },
        { [0, 0x80, 0x80, 0x01], "more than 2 bytes (an overflowing length)" },
        { [0, 0], "an empty literal run at page offset 0" },
        { [0, 1, 7, 0, 1, 7], "an empty zero run at page offset 1" },
        { [0x80, 0x20, 1, 7], "reaches past the page's last byte" },            // zero run of 4096
        { [0xFF, 0x1F, 2, 7, 7], "runs past the page's end" },                  // 4095 then 2 bytes
        { [0, 0x80, 0x20, .. new byte[Page], 1], "follow the runs, which already cover the page" },
        { [0xFF, 0x7F, 1, 7], "reaches past the page's last byte" },            // 16383: lengths overflow a page
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public void MalformedDeltas_AreRefused_AndChangeNothing(byte[] delta, string expected)
    {
        var page = new byte[Page];
        new Random(9).NextBytes(page);
        var before = (byte[])page.Clone();
        string? problem = Xbzrle.Apply(delta, page);
        Assert.NotNull(problem);
        Assert.Contains(expected, problem, StringComparison.Ordinal);
        Assert.Equal(before, page);
    }

    [Fact]
    public void EveryTruncationOfAGoodDelta_IsRefused_OrDecodesAsAShorterOne()
    {
        var (old, current) = Pair(new Random(11), 12, 40);
        var output = new byte[Page];
        int n = Xbzrle.Encode(old, current, output);
        Assert.True(n > 10);
        for (int cut = 1; cut < n; cut++)
        {
            // A cut between two whole pairs is itself a well-formed (shorter) delta; any other cut is refused.
            var page = (byte[])old.Clone();
            if (Xbzrle.Apply(output.AsSpan(0, cut), page) is null)
            {
                Assert.NotEqual(current, page);
            }
            else
            {
                Assert.Equal(old, page);
            }
        }
    }

    [Theory]
    [InlineData(0u, new byte[] { 0 })]
    [InlineData(127u, new byte[] { 0x7F })]
    [InlineData(128u, new byte[] { 0x80, 0x01 })]
    [InlineData(uint.MaxValue, new byte[] { 0xFF, 0xFF, 0xFF, 0xFF, 0x0F })]
    public void TheBaseRound_PrefixesTheRuns(uint round, byte[] expected)
    {
        var output = new byte[DeltaPayload.MaxBaseBytes];
        int n = DeltaPayload.WriteBase(output, round);
        Assert.Equal(expected, output.AsSpan(0, n).ToArray());
        byte[] payload = [.. expected, 0, 1, 7];
        Assert.Null(DeltaPayload.Read(payload, out uint read, out int runs));
        Assert.Equal((round, n), (read, runs));
    }

    [Theory]
    [InlineData(new byte[0], "empty")]
    [InlineData(new byte[] { 0x80 }, "cut off")]
    [InlineData(new byte[] { 0xFF, 0xFF, 0xFF, 0xFF, 0x1F }, "out of range")]
    [InlineData(new byte[] { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01 }, "more than 5 bytes")]
    public void ABadBaseRound_IsRefused(byte[] payload, string expected)
    {
        string? problem = DeltaPayload.Read(payload, out _, out _);
        Assert.NotNull(problem);
        Assert.Contains(expected, problem, StringComparison.Ordinal);
    }
}
