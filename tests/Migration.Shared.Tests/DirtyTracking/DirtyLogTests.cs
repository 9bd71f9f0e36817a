using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;

namespace Migration.Shared.Tests.DirtyTracking;

public class DirtyLogTests
{
    private const long Pages = 4096;

    private static (GuestRam Ram, DirtyLog Log, GuestMemory Memory) NewGuest(DirtyLogMode mode, long chunk = 1024)
    {
        var ram = GuestRam.Allocate(Pages * PageGeometry.PageSize);
        var log = new DirtyLog(Pages, mode, chunk);
        log.Enable();
        return (ram, log, new GuestMemory(ram, log));
    }

    private static long Gpa(long pfn, int offset = 0) => (pfn << PageGeometry.PageShift) + offset;

    [Fact]
    public void Disabled_Log_RecordsNothing()
    {
        var (ram, log, memory) = NewGuest(DirtyLogMode.Eager);
        using var _ = ram;
        log.Disable();
        memory.WriteUInt64(Gpa(7), 1);
        var bitmap = new PageBitmap(Pages);
        Assert.Equal(0, log.SyncInto(bitmap));
        Assert.Equal(0, log.PagesLogged);
    }

    [Fact]
    public void Eager_Sync_FetchesAndRearms()
    {
        var (ram, log, memory) = NewGuest(DirtyLogMode.Eager);
        using var _ = ram;
        var bitmap = new PageBitmap(Pages);
        memory.WriteUInt64(Gpa(7), 1);
        memory.Write(Gpa(9, 4090), new byte[10]); // crosses into page 10

        Assert.Equal(3, log.SyncInto(bitmap));
        Assert.True(bitmap.Get(7) && bitmap.Get(9) && bitmap.Get(10));
        Assert.Equal(0, log.SyncInto(new PageBitmap(Pages)));

        memory.WriteByte(Gpa(7), 2); // re-armed: logged again
        var next = new PageBitmap(Pages);
        Assert.Equal(1, log.SyncInto(next));
        Assert.True(next.Get(7));
        Assert.Equal(2, log.Syncs - 1);
    }

    [Fact]
    public void Manual_WriteToUnarmedPage_IsNotLoggedUntilClear()
    {
        var (ram, log, memory) = NewGuest(DirtyLogMode.Manual);
        using var _ = ram;
        memory.WriteUInt64(Gpa(5), 1);
        var first = new PageBitmap(Pages);
        Assert.Equal(1, log.SyncInto(first));
        long loggedAfterFirstWrite = log.PagesLogged;

        // The sync only fetched: page 5 is still un-armed, so this write is not logged again...
        memory.WriteUInt64(Gpa(5), 2);
        Assert.Equal(loggedAfterFirstWrite, log.PagesLogged);

        // ...and once its chunk is cleared, nothing remembers it: the engine must clear before it reads the page.
        Assert.Equal(1, log.ClearChunkContaining(5));
        var afterClear = new PageBitmap(Pages);
        Assert.Equal(0, log.SyncInto(afterClear));
        Assert.False(afterClear.Get(5));

        // Re-armed: the next write is logged.
        memory.WriteUInt64(Gpa(5), 3);
        Assert.Equal(loggedAfterFirstWrite + 1, log.PagesLogged);
        var third = new PageBitmap(Pages);
        Assert.Equal(1, log.SyncInto(third));
        Assert.True(third.Get(5));
    }

    [Fact]
    public void Manual_Clear_KeepsPagesFirstLoggedAfterTheSync()
    {
        var (ram, log, memory) = NewGuest(DirtyLogMode.Manual, chunk: 1024);
        using var _ = ram;
        memory.WriteByte(Gpa(1), 1);
        log.SyncInto(new PageBitmap(Pages));
        memory.WriteByte(Gpa(2), 1); // same chunk, logged after the sync

        log.ClearChunkContaining(1);

        Assert.False(log.IsLogged(1));
        Assert.True(log.IsLogged(2));
    }

    [Fact]
    public void Manual_ClearChunk_IsOncePerSyncAndOnlyItsChunk()
    {
        var (ram, log, memory) = NewGuest(DirtyLogMode.Manual, chunk: 1024);
        using var _ = ram;
        memory.WriteByte(Gpa(10), 1);
        memory.WriteByte(Gpa(2000), 1);
        log.SyncInto(new PageBitmap(Pages));

        Assert.Equal(1, log.ClearChunkContaining(10));
        Assert.Equal(0, log.ClearChunkContaining(11)); // already cleared since the sync
        Assert.True(log.IsLogged(2000));                // other chunk untouched
        Assert.Equal(1, log.ClearChunk(log.ChunkOf(2000)));
    }

    [Fact]
    public void Eager_ClearChunk_IsANoOp()
    {
        var (ram, log, memory) = NewGuest(DirtyLogMode.Eager);
        using var _ = ram;
        memory.WriteByte(Gpa(3), 1);
        Assert.Equal(0, log.ClearChunkContaining(3));
        Assert.True(log.IsLogged(3));
    }

    [Fact]
    public void Constructor_RejectsChunksThatAreNotWholeWords()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new DirtyLog(Pages, DirtyLogMode.Manual, 100));
    }

    [Fact]
    public void MarkDirty_OutOfRange_Throws()
    {
        var log = new DirtyLog(Pages, DirtyLogMode.Eager);
        log.Enable();
        Assert.Throws<ArgumentOutOfRangeException>(() => log.MarkDirty(Pages));
    }

    /// <summary>
    /// Writers store increasing values while a "migration" thread syncs and copies every reported page into a shadow,
    /// as precopy does. After the writers stop and one final sync and copy, the shadow must equal RAM on every page:
    /// a store that raced a sync was either seen by it or by a later one. Runs both modes (manual clears each chunk
    /// right before copying from it).
    /// </summary>
    [Theory]
    [InlineData(DirtyLogMode.Eager)]
    [InlineData(DirtyLogMode.Manual)]
    public async Task RacingSyncs_NeverLoseAStore(DirtyLogMode mode)
    {
        const int Writers = 3;
        const long StressPages = 512;
        using var ram = GuestRam.Allocate(4L << 20);
        var log = new DirtyLog(ram.PageCount, mode, clearChunkPages: 128);
        var memory = new GuestMemory(ram, log);
        log.Enable();
        var shadow = new byte[StressPages * PageGeometry.PageSize];
        ram.Pages(0, (int)StressPages).CopyTo(shadow);

        using var stop = new CancellationTokenSource();
        var writers = Enumerable.Range(0, Writers).Select(w => Task.Run(() =>
        {
            var rng = new Random(w);
            ulong value = 0;
            while (!stop.IsCancellationRequested)
            {
                long pfn = rng.NextInt64(StressPages);
                memory.WriteUInt64(Gpa(pfn, 8 * w), ++value);
            }
        })).ToArray();

        var bitmap = new PageBitmap(ram.PageCount);
        void SyncAndCopy()
        {
            log.SyncInto(bitmap);
            for (long p = bitmap.FindNextSet(0); p >= 0; p = bitmap.FindNextSet(p + 1))
            {
                log.ClearChunkContaining(p);
                bitmap.Clear(p);
                if (p < StressPages)
                {
                    ram.Page(p).CopyTo(shadow.AsSpan((int)(p * PageGeometry.PageSize), PageGeometry.PageSize));
                }
            }
        }

        var deadline = DateTime.UtcNow.AddMilliseconds(400);
        int syncs = 0;
        while (DateTime.UtcNow < deadline)
        {
            SyncAndCopy();
            syncs++;
        }

        stop.Cancel();
        await Task.WhenAll(writers).WaitAsync(TimeSpan.FromSeconds(10));
        SyncAndCopy(); // stop-and-copy

        for (long p = 0; p < StressPages; p++)
        {
            var expected = ram.Page(p);
            var got = shadow.AsSpan((int)(p * PageGeometry.PageSize), PageGeometry.PageSize);
            Assert.True(expected.SequenceEqual(got), $"page {p} lost a store ({mode}, {syncs} syncs)");
        }

        Assert.True(syncs > 1);
    }
}
