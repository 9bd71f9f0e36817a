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
        Assert.True(postcopy.Latency.Count >= 1); // a signal can make the thread fault twice on the page
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
    public async Task AZeroPageFromTheSource_IsPlacedOnce_AndCountsAsArrived()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        ram.Page(50).Fill(0x50); // precopy's copy, dirtied since: the source now sends it as zero
        using var source = new FakePostcopySource(_ => 0x99);
        using var postcopy = new PostcopyRam(ram, Map(ram, 50), fill: null, fillByte: 0, source.Request);
        source.Attach(postcopy);
        postcopy.Start();

        Assert.True(postcopy.PlaceZero(50));
        Assert.False(postcopy.PlaceZero(50));

        await postcopy.AllArrived.WaitAsync(Bound);
        Assert.True(ram.Page(50).IndexOfAnyExcept((byte)0) < 0, "the page reads as zero");
        Assert.Empty(source.Requested);
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
        await WaitUntil(() => asked.Count >= 2); // the source never answers: the connection broke

        Assert.Equal([4L, 70L], postcopy.Unanswered());
        var page = new byte[PageGeometry.PageSize];
        postcopy.Place(70, page); // an answer that was already on its way
        Assert.Equal([4L], postcopy.Unanswered());
        postcopy.Place(4, page);
        Assert.Empty(postcopy.Unanswered());
        await Task.WhenAll(readers).WaitAsync(Bound);
    }

    [Fact]
    public unsafe void ACopyOverAPageAlreadyThere_PlacesWhatComesBefore_AndSaysItExists()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        ram.BasePointer[(11 << PageGeometry.PageShift) + 5] = 0x42; // mapped before the range is armed
        using var uffd = Userfaultfd.Open();
        uffd.Register((nint)ram.BasePointer, (nuint)ram.SizeBytes);
        ram.DropForPostcopy(10, 1); // the store above may have mapped a whole huge page around page 11
        ram.DropForPostcopy(12, 1);
        var three = new byte[3 * PageGeometry.PageSize];
        three.AsSpan().Fill(0x99);

        Userfaultfd.Placement result;
        long placed;
        fixed (byte* from = three)
        {
            result = uffd.Copy((nint)(ram.BasePointer + (10 << PageGeometry.PageShift)), (nint)from,
                (nuint)three.Length, out placed);
        }

        Assert.Equal(Userfaultfd.Placement.Exists, result);
        Assert.Equal(PageGeometry.PageSize, placed);
        Assert.Equal(0x99, ram.BasePointer[10 << PageGeometry.PageShift]);
        Assert.Equal(0x42, ram.BasePointer[(11 << PageGeometry.PageShift) + 5]);
        Assert.Equal(0, ram.BasePointer[(11 << PageGeometry.PageShift) + 6]);
    }

    [Fact]
    public unsafe void PlaceRun_OverAPageMappedBeforeThatNoOneMarked_LeavesItAsItIs()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        ram.Page(21).Fill(0x21); // precopy's current copy: not to fetch
        using var source = new FakePostcopySource(_ => 0);
        using var postcopy = new PostcopyRam(ram, Map(ram, 20, 22), fill: null, fillByte: 0, source.Request);
        source.Attach(postcopy);
        postcopy.Start();
        var run = new byte[3 * PageGeometry.PageSize];
        run.AsSpan().Fill(0x77);

        int placed;
        fixed (byte* from = run)
        {
            placed = postcopy.PlaceRun(20, 3, from);
        }

        Assert.Equal(2, placed);
        Assert.Equal(0, postcopy.Remaining);
        Assert.Equal(0x77, ram.Page(20)[0]);
        Assert.Equal(0x21, ram.Page(21)[0]);
        Assert.Equal(0x77, ram.Page(22)[0]);
    }

    [Fact]
    public async Task NeverSentPagesNoOneTouched_ReadThePoisonValue_AfterStop()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        ram.Populate(); // a preallocated target: never-sent pages are mapped as zero
        using var source = new FakePostcopySource(_ => 0x10);
        using var postcopy = new PostcopyRam(ram, Map(ram, 1), Map(ram, 30, 31), fillByte: 0x5A, source.Request);
        source.Attach(postcopy);
        postcopy.Start();
        Assert.Equal(0x5A, await Task.Run(() => ram.Page(30)[0]).WaitAsync(Bound)); // touched: resolved by its fault
        Assert.True(postcopy.Place(1, Enumerable.Repeat((byte)0x10, PageGeometry.PageSize).ToArray()));
        await postcopy.AllArrived.WaitAsync(Bound);

        postcopy.Stop();

        Assert.Null(ram.Postcopy);
        Assert.Equal(0x5A, ram.Page(31)[4000]); // never touched: filled at the end
        Assert.Equal(0, ram.Page(32)[0]);
    }

    [Fact]
    public async Task AnAbandonedPostcopy_StopsTheThreadWaitingOnAPage_RatherThanGivingItZeros()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        var asked = new System.Collections.Concurrent.ConcurrentQueue<long>();
        using var postcopy = new PostcopyRam(ram, Map(ram, 8), fill: null, fillByte: 0, asked.Enqueue);
        postcopy.Start();
        var reader = Task.Run(() => ram.Page(8)[0]);
        await WaitUntil(() => !asked.IsEmpty); // the source is lost before it answers

        postcopy.Abandon();

        var ex = await Assert.ThrowsAsync<PostcopyAbandonedException>(() => reader.WaitAsync(Bound));
        Assert.Equal(8, ex.Pfn);
        Assert.False(postcopy.Place(8, new byte[PageGeometry.PageSize]));
    }

    [Fact]
    public async Task AGuestDiscard_OfAPageNotYetThere_IsZeroedHere_NotFetched()
    {
        using var ram = GuestRam.Allocate(4L << 20);
        using var source = new FakePostcopySource(_ => 0x66);
        using var postcopy = new PostcopyRam(ram, Map(ram, 40, 41), fill: null, fillByte: 0, source.Request);
        source.Attach(postcopy);
        postcopy.Start();

        await Task.Run(() => ram.Discard(40, 1)).WaitAsync(Bound);

        Assert.Equal(0, ram.Page(40)[0]);
        Assert.Empty(source.Requested);
        Assert.Equal(1, postcopy.Remaining);
        Assert.False(postcopy.Place(40, Enumerable.Repeat((byte)0x66, PageGeometry.PageSize).ToArray()));
        Assert.Equal(0, ram.Page(40)[0]); // the late answer changed nothing
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

    private static Task WaitUntil(Func<bool> condition) => Task.Run(async () =>
    {
        while (!condition())
        {
            await Task.Delay(5);
        }
    }).WaitAsync(Bound);

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
