using Migration.Shared.Balloon;

namespace Migration.Shared.Tests.Balloon;

/// <summary>
/// The device's side of a virtqueue: slots, numbering, the used set (in order and ahead of order, across sibling
/// queues), dropping what waits, and waiting for a buffer to be used.
/// </summary>
public sealed class VirtqueueTests
{
    private readonly object _gate = new();

    [Fact]
    public void Buffers_AreNumberedInOrder_AndTakenOldestFirst()
    {
        var queue = new Virtqueue<string>(4, _gate);
        Assert.Equal(-1, queue.OldestSeq);
        Assert.Equal((0L, 1L), (queue.Add("a"), queue.Add("b")));
        Assert.Equal((2, 2, 0L), (queue.Count, queue.FreeSlots, queue.OldestSeq));

        Assert.True(queue.TryTake(out long seq, out string buffer));
        Assert.Equal((0L, "a", 1, 3), (seq, buffer, queue.Count, queue.FreeSlots));
        Assert.Equal(1, queue.OldestSeq);
    }

    [Fact]
    public void AFullQueue_RefusesTheBuffer_UntilASlotIsTaken()
    {
        var queue = new Virtqueue<int>(2, _gate);
        queue.Add(1);
        queue.Add(2);

        Assert.Equal(-1, queue.Add(3));
        Assert.Equal((2, 0), (queue.Count, queue.FreeSlots));
        Assert.True(queue.TryTake(out _, out _));
        Assert.Equal(2, queue.Add(3)); // the refused buffer took no number
    }

    [Fact]
    public void ABufferTaken_IsUsedOnlyOnceMarked()
    {
        var queue = new Virtqueue<int>(2, _gate);
        long seq = queue.Add(7);
        Assert.True(queue.TryTake(out _, out _));
        Assert.False(queue.IsUsed(seq));

        lock (_gate)
        {
            queue.MarkUsed(seq);
        }

        Assert.True(queue.IsUsed(seq));
        Assert.False(queue.IsUsed(seq + 1)); // not yet given out
        Assert.False(queue.TryTake(out _, out _));
    }

    [Fact]
    public void Siblings_ShareTheNumbering_AndAreUsedInAnyOrder()
    {
        var inflate = new Virtqueue<int>(4, _gate);
        var deflate = inflate.Sibling();
        long first = inflate.Add(1);
        long second = deflate.Add(2);
        long third = inflate.Add(3);
        Assert.Equal((0L, 1L, 2L), (first, second, third));
        // Slots are each queue's own: deflate has one buffer of its four, inflate two.
        Assert.Equal((4, 3, 1), (deflate.Capacity, deflate.FreeSlots, deflate.Count));
        Assert.Equal((2, 2), (inflate.FreeSlots, inflate.Count));

        lock (_gate)
        {
            Assert.True(deflate.TryTake(out long taken, out _));
            deflate.MarkUsed(taken);
        }

        Assert.Equal((false, true, false), (inflate.IsUsed(first), inflate.IsUsed(second), deflate.IsUsed(third)));

        lock (_gate)
        {
            Assert.True(inflate.TryTake(out long a, out _));
            Assert.True(inflate.TryTake(out long b, out _));
            inflate.MarkUsed(b); // ahead of a
            Assert.False(deflate.IsUsed(a));
            inflate.MarkUsed(a);
        }

        Assert.True(new[] { first, second, third }.All(deflate.IsUsed));
    }

    [Fact]
    public void DropAll_UsesEveryBufferWaiting()
    {
        var queue = new Virtqueue<int>(4, _gate);
        long[] seqs = [queue.Add(1), queue.Add(2), queue.Add(3)];
        Assert.True(queue.TryTake(out long working, out _)); // the device is working on the first

        lock (_gate)
        {
            queue.DropAll();
        }

        Assert.Equal((0, 4), (queue.Count, queue.FreeSlots));
        Assert.Equal((false, true, true), (queue.IsUsed(seqs[0]), queue.IsUsed(seqs[1]), queue.IsUsed(seqs[2])));
        lock (_gate)
        {
            queue.MarkUsed(working);
        }

        Assert.True(seqs.All(queue.IsUsed));
    }

    [Fact]
    public async Task WaitUsed_ReturnsWhenTheDeviceUsesTheBuffer_AndTimesOutOtherwise()
    {
        var queue = new Virtqueue<int>(2, _gate);
        long seq = queue.Add(1);
        Assert.False(queue.WaitUsed(seq, TimeSpan.FromMilliseconds(20)));

        var device = Task.Run(() =>
        {
            Thread.Sleep(50);
            lock (_gate)
            {
                queue.TryTake(out long taken, out _);
                queue.MarkUsed(taken);
            }
        });

        Assert.True(queue.WaitUsed(seq, TimeSpan.FromSeconds(30)));
        await device;
        Assert.True(queue.WaitUsed(seq, TimeSpan.Zero)); // already used: no wait
    }
}
