using Migration.Shared.DirtyTracking;
using Migration.Shared.Precopy;

namespace Migration.Shared.Tests.Precopy;

public sealed class PostcopyPushTests
{
    private static (PostcopyPush Push, MigrationBitmap Pages) Push(DirtyLogMode mode, params long[] toSend)
    {
        var pages = new MigrationBitmap(new DirtyLog(64, mode));
        using (pages.Lock())
        {
            foreach (long p in toSend)
            {
                pages.Pages.Set(p);
            }
        }

        return (new PostcopyPush(pages), pages);
    }

    private static long[] Take(PostcopyPush push, int n)
    {
        var pfns = new long[n];
        return pfns[..push.TakeBatch(pfns)];
    }

    [Theory]
    [InlineData(DirtyLogMode.Eager)]
    [InlineData(DirtyLogMode.Manual)]
    public void ARequestJumpsTheQueue_AndThePushGoesOnFromJustPastIt_ThenWrapsAround(DirtyLogMode mode)
    {
        var (push, pages) = Push(mode, 1, 5, 9, 20, 30);

        Assert.Equal([1L, 5L], Take(push, 2));
        Assert.True(push.TakeRequested(20));
        Assert.Equal([30L], Take(push, 2)); // from just past the request
        Assert.Equal([9L], Take(push, 2)); // wrapped: what the jump passed over
        Assert.Empty(Take(push, 2));
        Assert.Equal(0, pages.Remaining);
    }

    [Fact]
    public void ARequestForAPageAlreadyPushed_SaysSo_AndTakesNothingElse()
    {
        var (push, pages) = Push(DirtyLogMode.Eager, 3, 4, 7);

        Assert.Equal([3L], Take(push, 1));
        Assert.False(push.TakeRequested(3));
        Assert.Equal(2, pages.Remaining);
        Assert.False(push.TakeRequested(10)); // never to send: the target holds it or resolves it itself
        Assert.Equal(2, pages.Remaining);
    }

    [Fact]
    public void EveryPageIsTakenOnce_WhateverTheRequestsInterleaved()
    {
        var all = Enumerable.Range(0, 64).Select(i => (long)i).ToArray();
        var (push, _) = Push(DirtyLogMode.Manual, all);
        var taken = new List<long>();
        var random = new Random(7);
        while (true)
        {
            long asked = random.Next(64);
            if (push.TakeRequested(asked))
            {
                taken.Add(asked);
            }

            long[] batch = Take(push, 3);
            if (batch.Length == 0 && push.Remaining == 0)
            {
                break;
            }

            taken.AddRange(batch);
        }

        Assert.Equal(all, taken.Order());
    }
}
