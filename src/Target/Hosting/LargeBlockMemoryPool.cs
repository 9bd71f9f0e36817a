using System.Buffers;
using System.Collections.Concurrent;
using Microsoft.AspNetCore.Connections;

namespace Migration.Target.Hosting;

/// <summary>
/// Kestrel's memory pools for the target: <see cref="LargeBlockMemoryPool"/> instead of the default 4 KiB blocks.
/// Kestrel sizes each socket read to one pool block, so with 4 KiB blocks a page stream cost a receive system call (and
/// a pipe segment) per 4 KiB; 64 KiB blocks cut the target's receive CPU to about a third (the measurement is in the
/// README, "How a migration runs"; 16 KiB already gets most of it, 256 KiB and 1 MiB no more than 64 KiB).
/// </summary>
internal sealed class LargeBlockMemoryPoolFactory : IMemoryPoolFactory<byte>
{
    private readonly List<LargeBlockMemoryPool> _pools = [];

    public MemoryPool<byte> Create(MemoryPoolOptions? options = null)
    {
        var pool = new LargeBlockMemoryPool();
        lock (_pools)
        {
            _pools.Add(pool);
        }

        return pool;
    }

    /// <summary>Lets every pool drop its idle blocks beyond a small reserve (between migrations).</summary>
    public void TrimIdle()
    {
        lock (_pools)
        {
            foreach (var pool in _pools)
            {
                pool.TrimIdle();
            }
        }
    }
}

/// <summary>
/// Pinned 64 KiB blocks, reused. Every rent returns a whole block, whatever the size asked for (a pool may return more
/// than the minimum), so the pipes above read and buffer 64 KiB at a time. A handful of blocks per connection are in
/// use at once, but a fast stream can have a whole flow-control window (16 MiB) buffered: the pool keeps what is
/// returned until <see cref="TrimIdle"/>, which a long-lived target calls between migrations (a soak of 100 grew by
/// steps of 6-13 MiB, each a new high-water mark of three busy channels, until it did).
/// </summary>
internal sealed class LargeBlockMemoryPool : MemoryPool<byte>
{
    public const int BlockSize = 64 << 10;
    private readonly ConcurrentBag<byte[]> _free = [];

    public override int MaxBufferSize => BlockSize;

    /// <summary>Blocks returned and not rented again.</summary>
    public int IdleCount => _free.Count;

    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        if (minBufferSize > BlockSize)
        {
            throw new ArgumentOutOfRangeException(
                nameof(minBufferSize), minBufferSize, $"blocks are {BlockSize} bytes");
        }

        return new Block(this,
            _free.TryTake(out var array) ? array : GC.AllocateUninitializedArray<byte>(BlockSize, pinned: true));
    }

    /// <summary>Idle blocks kept by <see cref="TrimIdle"/>: enough for a connection's first reads.</summary>
    public const int KeptIdle = 16;

    /// <summary>Drops idle blocks beyond <see cref="KeptIdle"/>; blocks in use come back as usual.</summary>
    public void TrimIdle()
    {
        while (_free.Count > KeptIdle && _free.TryTake(out _))
        {
        }
    }

    protected override void Dispose(bool disposing) => _free.Clear();

    private sealed class Block(LargeBlockMemoryPool pool, byte[] array) : IMemoryOwner<byte>
    {
        private byte[]? _array = array;

        public Memory<byte> Memory => _array ?? throw new ObjectDisposedException(nameof(Block));

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _array, null) is { } a)
            {
                pool._free.Add(a);
            }
        }
    }
}
