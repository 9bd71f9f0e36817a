using Migration.Shared.Guest;

namespace Migration.Shared.Tests.Guest;

public class GuestRamTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(4096)]
    [InlineData((4L << 20) + 1)]
    [InlineData((1L << 40) + 4096)]
    public void Allocate_InvalidSize_ThrowsWithTheSize(long bytes)
    {
        var ex = Assert.ThrowsAny<ArgumentException>(() => GuestRam.Allocate(bytes));
        Assert.Contains(bytes.ToString(System.Globalization.CultureInfo.InvariantCulture), ex.Message);
    }

    [Fact]
    public void Allocate_FreshRam_ReadsAsZero()
    {
        using var ram = GuestRam.Allocate(8L << 20);
        Assert.Equal(2048, ram.PageCount);
        Assert.True(ram.Page(0).IndexOfAnyExcept((byte)0) < 0);
        Assert.True(ram.Page(2047).IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public void Page_OutOfRange_ThrowsNamingThePage()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => ram.Page(1024));
        Assert.Contains("Page 1024", ex.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => ram.Page(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => ram.Pages(1000, 25));
    }

    [Fact]
    public void Discard_ReturnsPagesToZero()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        ram.Pages(10, 4).Fill(0xAB);
        ram.Discard(10, 2);
        Assert.True(ram.Page(10).IndexOfAnyExcept((byte)0) < 0);
        Assert.True(ram.Page(11).IndexOfAnyExcept((byte)0) < 0);
        Assert.Equal(0xAB, ram.Page(12)[100]);
    }

    [Fact]
    public void KeepOnlyUnbacked_DropsPagesAStoreTouched_AndKeepsDiscardedOnes()
    {
        using var ram = GuestRam.Allocate(8L << 20);
        ram.Page(10)[0] = 1;
        ram.Page(600)[5] = 1;
        // The whole 2 MiB around it: a lone empty page in a huge-page range may be backed again at any moment by the
        // host's khugepaged (it collapses ranges with up to 511 of 512 pages empty), and this test would flake.
        ram.Discard(512, 512);
        var pages = new Migration.Shared.DirtyTracking.PageBitmap(ram.PageCount);
        pages.SetRange(0, ram.PageCount);
        Assert.True(ram.KeepOnlyUnbacked(pages, 0, ram.PageCount), "pagemap readable on this host");
        Assert.False(pages.Get(10), "a stored-to page is backed");
        Assert.True(pages.Get(600), "a discarded page is unbacked again");
        Assert.True(pages.Get(2000), "a page never touched is unbacked");
    }
}
