using Migration.Target.Hosting;

namespace Migration.Target.Tests.Hosting;

public sealed class LargeBlockMemoryPoolTests
{
    [Fact]
    public void ReturnedBlocksAreReused_AndTrimmingKeepsOnlyTheReserve()
    {
        var factory = new LargeBlockMemoryPoolFactory();
        using var pool = (LargeBlockMemoryPool)factory.Create();
        var blocks = Enumerable.Range(0, 40).Select(_ => pool.Rent(100)).ToList();
        Assert.All(blocks, b => Assert.Equal(LargeBlockMemoryPool.BlockSize, b.Memory.Length));
        blocks.ForEach(b => b.Dispose());
        Assert.Equal(40, pool.IdleCount);

        using (pool.Rent())
        {
            Assert.Equal(39, pool.IdleCount); // reused, not allocated
        }

        factory.TrimIdle();
        Assert.Equal(LargeBlockMemoryPool.KeptIdle, pool.IdleCount);
    }
}
