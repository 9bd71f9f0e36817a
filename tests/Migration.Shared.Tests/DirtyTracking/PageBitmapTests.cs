using Migration.Shared.DirtyTracking;

namespace Migration.Shared.Tests.DirtyTracking;

public class PageBitmapTests
{
    [Fact]
    public void SetAndClear_KeepTheCount()
    {
        var b = new PageBitmap(200);
        Assert.True(b.Set(3));
        Assert.False(b.Set(3));
        Assert.True(b.Set(130));
        Assert.Equal(2, b.Count);
        Assert.True(b.Clear(3));
        Assert.False(b.Clear(3));
        Assert.Equal(1, b.Count);
    }

    [Fact]
    public void SetAll_CoversExactlyThePages()
    {
        var b = new PageBitmap(130);
        b.SetAll();
        Assert.Equal(130, b.Count);
        Assert.Equal(129, b.FindNextSet(129));
        Assert.Equal(-1, b.FindNextSet(130));
        Assert.Equal(130, b.ClearRange(0, 130));
        Assert.Equal(0, b.Count);
    }

    [Fact]
    public void FindNextSet_SkipsEmptyWords()
    {
        var b = new PageBitmap(1 << 20);
        b.Set(5);
        b.Set(700_000);
        Assert.Equal(5, b.FindNextSet(0));
        Assert.Equal(700_000, b.FindNextSet(6));
        Assert.Equal(-1, b.FindNextSet(700_001));
    }

    [Fact]
    public void ClearRange_CountsOnlyBitsInRange()
    {
        var b = new PageBitmap(256);
        for (int i = 0; i < 256; i += 2)
        {
            b.Set(i);
        }

        Assert.Equal(10, b.CountRange(60, 20));
        Assert.Equal(10, b.ClearRange(60, 20));
        Assert.Equal(118, b.Count);
        Assert.False(b.Get(60));
        Assert.True(b.Get(80));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(64)]
    [InlineData(1000)]
    public void TheWireForm_RoundTrips_AndRejectsAWrongLengthOrBitsPastTheEnd(long pages)
    {
        var map = new PageBitmap(pages);
        for (long p = 0; p < pages; p += 3)
        {
            map.Set(p);
        }

        byte[] bytes = map.ToBytes();
        Assert.Equal((pages + 7) / 8, bytes.Length);
        var back = PageBitmap.FromBytes(bytes, pages);
        Assert.NotNull(back);
        Assert.Equal(map.Count, back.Count);
        for (long p = 0; p < pages; p++)
        {
            Assert.Equal(map.Get(p), back.Get(p));
        }

        Assert.Null(PageBitmap.FromBytes(bytes.AsSpan(1), pages));
        Assert.Null(PageBitmap.FromBytes([.. bytes, 0], pages));
        if (pages % 8 != 0)
        {
            bytes[^1] |= 0x80; // a page beyond the last
            Assert.Null(PageBitmap.FromBytes(bytes, pages));
        }
    }
}
