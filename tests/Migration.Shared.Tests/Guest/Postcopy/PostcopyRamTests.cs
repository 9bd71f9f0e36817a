using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Postcopy;
using Migration.TestSupport;

namespace Migration.Shared.Tests.Guest.Postcopy;

/// <summary>
/// Real userfaultfd over real guest RAM: threads that touch a missing page wait in the kernel until the page is
/// placed. Each test bounds its waits, so a page that never comes fails it rather than hanging the suite.
/// </summary>
public sealed class PostcopyRamTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task AThreadTouchingAPageToFetch_WaitsForIt_AndReadsWhatWasPlaced()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        var fetch = Map(ram, 3);
        using var source = new FakePostcopySource(pfn => (byte)(pfn + 1));
        using var postcopy = new PostcopyRam(ram, fetch, fill: null, fillByte: 0, source.Request);
        source.Attach(postcopy);
        postcopy.Start();

        byte seen = await Task.Run(() => ram.Page(3)[100]).WaitAsync(Bound);

        Assert.Equal(4, seen);
        Assert.Equal([3L], source.Requested);
        await postcopy.AllArrived.WaitAsync(Bound);
        Assert.Equal(1, postcopy.Latency.Count);
    }

    [Fact]
    public async Task AFaultOnANeverSentPage_ReadsThePoisonValue_AndAnUnwrittenPageZero_WithoutTheSource()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        var fill = Map(ram, 5);
        using var source = new FakePostcopySource(_ => 1);
        using var postcopy = new PostcopyRam(ram, Map(ram), fill, fillByte: 0xAA, source.Request);
        source.Attach(postcopy);
        postcopy.Start();

        var (poisoned, zero) = await Task.Run(() => (ram.Page(5)[4095], ram.Page(6)[0])).WaitAsync(Bound);

        Assert.Equal(0xAA, poisoned);
        Assert.Equal(0, zero);
        Assert.Empty(source.Requested);
        Assert.Equal(2, postcopy.LocalFaults);
    }

    [Fact]
    public async Task APrecopyCopyOfAPageToFetch_IsDropped_AndThePageAskedFor()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        ram.Page(1).Fill(0x11); // what precopy delivered before the guest dirtied it again
        ram.Page(2).Fill(0x22); // current: not to fetch
        using var source = new FakePostcopySource(_ => 0x33);
        using var postcopy = new PostcopyRam(ram, Map(ram, 1), fill: null, fillByte: 0, source.Request);
        source.Attach(postcopy);
        postcopy.Start();

        var (fetched, kept) = await Task.Run(() => (ram.Page(1)[7], ram.Page(2)[7])).WaitAsync(Bound);

        Assert.Equal(0x33, fetched);
        Assert.Equal(0x22, kept);
        Assert.Equal([1L], source.Requested);
    }

    [Fact]
    public async Task ASecondPlacement_AfterTheGuestWrote_ChangesNothing()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        var memory = new GuestMemory(ram, new DirtyLog(ram.PageCount, DirtyLogMode.Eager));
        using var source = new FakePostcopySource(_ => 0x44);
        using var postcopy = new PostcopyRam(ram, Map(ram, 2), fill: null, fillByte: 0, source.Request);
        source.Attach(postcopy);
        postcopy.Start();
        var page = new byte[PageGeometry.PageSize];
        page.AsSpan().Fill(0x44);

        Assert.True(postcopy.Place(2, page));
        await Task.Run(() => memory.WriteByte((2 * PageGeometry.PageSize) + 9, 0x55)).WaitAsync(Bound);
        Assert.False(postcopy.Place(2, page)); // the push and the answer crossed: the first stands

        Assert.Equal(0x55, ram.Page(2)[9]);
        Assert.Equal(0x44, ram.Page(2)[10]);
        Assert.Equal(1, postcopy.PlacementsFound);
        Assert.Empty(source.Requested);
    }

    [Fact]
    public async Task PlaceRun_SkipsPagesAlreadyThere_AndEveryPageArrivesOnce()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        var fetch = Map(ram, 0, 1, 2, 3, 4, 5, 6, 7);
        using var source = new FakePostcopySource(_ => 0);
        using var postcopy = new PostcopyRam(ram, fetch, fill: null, fillByte: 0, source.Request);
        source.Attach(postcopy);
        postcopy.Start();
        var run = new byte[8 * PageGeometry.PageSize];
        for (int p = 0; p < 8; p++)
        {
            run.AsSpan(p * PageGeometry.PageSize, PageGeometry.PageSize).Fill((byte)(0x60 + p));
        }

        Assert.True(postcopy.Place(3, run.AsSpan(3 * PageGeometry.PageSize, PageGeometry.PageSize)));
        int placed;
        unsafe
        {
            fixed (byte* from = run)
            {
                placed = postcopy.PlaceRun(0, 8, from);
            }
        }

        Assert.Equal(7, placed);
        await postcopy.AllArrived.WaitAsync(Bound);
        Assert.Equal(0, postcopy.Remaining);
        Assert.Equal(8, postcopy.PagesPlaced);
        for (int p = 0; p < 8; p++)
        {
            Assert.Equal(0x60 + p, ram.Page(p)[1000]);
        }
    }

    [Fact]
    public async Task ManyThreadsFaultingOnOnePage_AskForItOnce()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        using var source = new FakePostcopySource(_ => 0x77, delay: TimeSpan.FromMilliseconds(50));
        using var postcopy = new PostcopyRam(ram, Map(ram, 9), fill: null, fillByte: 0, source.Request);
        source.Attach(postcopy);
        postcopy.Start();

        byte[] seen = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() => ram.Page(9)[0])))
            .WaitAsync(Bound);

        Assert.All(seen, b => Assert.Equal(0x77, b));
        Assert.Equal([9L], source.Requested);
    }

    [Fact]
    public async Task Unanswered_IsWhatWasAskedAndNotPlaced_ForANewReturnPathToAskAgain()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        var asked = new System.Collections.Concurrent.ConcurrentQueue<long>();
        using var postcopy = new PostcopyRam(ram, Map(ram, 4, 70, 71), fill: null, fillByte: 0, asked.Enqueue);
        postcopy.Start();
        Task<byte>[] readers = [Task.Run(() => ram.Page(4)[0]), Task.Run(() => ram.Page(70)[0])];
        while (asked.Count < 2)
        {
            await Task.Delay(5).WaitAsync(Bound); // the source never answers: the connection broke
        }

        Assert.Equal([4L, 70L], postcopy.Unanswered());
        var page = new byte[PageGeometry.PageSize];
        postcopy.Place(70, page); // an answer that was already on its way
        Assert.Equal([4L], postcopy.Unanswered());
        postcopy.Place(4, page);
        Assert.Empty(postcopy.Unanswered());
        await Task.WhenAll(readers).WaitAsync(Bound);
    }

    [Fact]
    public void Explain_NamesTheCauseAndTheFix()
    {
        string denied = Userfaultfd.Explain(1, 13);
        Assert.Contains("vm.unprivileged_userfaultfd=1", denied);
        Assert.Contains("/dev/userfaultfd", denied);
        Assert.Contains("CONFIG_USERFAULTFD", Userfaultfd.Explain(38, 2));
    }

    [Fact]
    public void FaultLatency_BucketsArePowersOfTwoMicroseconds()
    {
        Assert.Equal(0, FaultLatency.BucketOf(1.5));
        Assert.Equal(7, FaultLatency.BucketOf(128));
        Assert.Equal(7, FaultLatency.BucketOf(255));
        Assert.Equal(FaultLatency.Buckets - 1, FaultLatency.BucketOf(1e12));
        var latency = new FaultLatency();
        latency.Record(TimeSpan.FromMicroseconds(100));
        latency.Record(TimeSpan.FromMicroseconds(300));
        latency.Record(TimeSpan.FromMicroseconds(900));
        Assert.Equal(128, latency.QuantileUpperBoundMicroseconds(0.3));
        Assert.Equal(1024, latency.QuantileUpperBoundMicroseconds(0.99));
    }

    private static PageBitmap Map(GuestRam ram, params long[] pages)
    {
        var map = new PageBitmap(ram.PageCount);
        foreach (long p in pages)
        {
            map.Set(p);
        }

        return map;
    }
}
