using System.Runtime.InteropServices;
using Migration.Shared.Guest;

namespace Migration.Shared.Transport;

/// <summary>
/// The source's cache for delta pages (QEMU's XBZRLE page cache): for recently sent pages, the exact bytes that went
/// on the wire, the round they went in and the channel that carried them. Bounded in bytes: it holds
/// <see cref="Slots"/> pages of <see cref="PageGeometry.PageSize"/> bytes in one native block, plus 21 bytes of
/// bookkeeping per slot. Set-associative (<see cref="Ways"/> slots per set, the set chosen by page number), and within
/// a set the entry sent in the oldest round is evicted first, as QEMU ages its entries by sync generation.
/// </summary>
/// <remarks>
/// <para>Several channels use it at once: each encoder holds a <see cref="Lease"/> (the read side of the resize lock)
/// while it encodes a batch, and the whole of one page's look-up, encoding and update under that page's set lock
/// (<see cref="Lease.LockFor"/>), so no other channel can evict or rewrite the entry in between.</para>
/// <para><see cref="Resize"/> takes the write side: it waits for the batches being encoded, moves the most recently
/// sent entries that fit into the new table (their bytes, rounds and channels unchanged, so a delta against them is as
/// right as before), frees the old one, and the encoders go on. It is safe at any time while a migration runs; 0 bytes
/// leaves no slot, and every page then goes whole.</para>
/// </remarks>
public sealed class DeltaPageCache : IDisposable
{
    /// <summary>Slots per set.</summary>
    public const int Ways = 4;

    /// <summary>The most a cache may hold (1 TiB, the largest guest).</summary>
    public const long MaxBytes = 1L << 40;

    private const int StripeCount = 256;

    private readonly ReaderWriterLockSlim _resize = new(LockRecursionPolicy.NoRecursion);
    private readonly object[] _stripes = new object[StripeCount];
    private Table _table;
    private bool _disposed;

    public DeltaPageCache(long capacityBytes)
    {
        for (int i = 0; i < StripeCount; i++)
        {
            _stripes[i] = new object();
        }

        _table = new Table(SlotsFor(capacityBytes));
    }

    /// <summary>Pages the cache can hold now (a multiple of <see cref="Ways"/>).</summary>
    public int Slots => Volatile.Read(ref _table).Slots;

    /// <summary>Bytes of page data the cache can hold now (<see cref="Slots"/> pages).</summary>
    public long CapacityBytes => (long)Slots * PageGeometry.PageSize;

    /// <summary>Pages it holds now.</summary>
    public int Count
    {
        get
        {
            _resize.EnterReadLock();
            try
            {
                return _table.Count();
            }
            finally
            {
                _resize.ExitReadLock();
            }
        }
    }

    /// <summary>How many times the cache was resized while in use.</summary>
    public int Resizes { get; private set; }

    /// <summary>
    /// Gives the cache room for <paramref name="bytes"/> of pages (rounded down to whole sets), keeping the most
    /// recently sent entries that fit. Safe while channels encode: it waits for the batches in progress. After the
    /// migration ended (the cache disposed) it does nothing.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative, or above <see cref="MaxBytes"/>.</exception>
    public void Resize(long bytes)
    {
        int slots = SlotsFor(bytes);
        if (slots == Slots)
        {
            return;
        }

        var table = new Table(slots); // mapped before the channels are held up: only the move happens under the lock
        _resize.EnterWriteLock();
        try
        {
            var old = _table;
            if (_disposed)
            {
                table.Dispose();
                return;
            }

            old.MoveInto(table);
            _table = table;
            old.Dispose();
            Resizes++;
        }
        finally
        {
            _resize.ExitWriteLock();
        }
    }

    /// <summary>
    /// Holds the table in place while a channel encodes (a <see cref="Resize"/> waits for it); dispose it when done.
    /// </summary>
    public Lease Enter()
    {
        _resize.EnterReadLock();
        return new Lease(this);
    }

    /// <summary>Frees the page data; waits for encoders in progress. Later leases see an empty cache.</summary>
    public void Dispose()
    {
        _resize.EnterWriteLock();
        try
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            _table.Dispose();
            _table = new Table(0);
        }
        finally
        {
            _resize.ExitWriteLock();
        }
    }

    private static int SlotsFor(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bytes, MaxBytes);
        long pages = bytes / PageGeometry.PageSize;
        return (int)(pages - (pages % Ways));
    }

    /// <summary>
    /// A channel's hold on the cache while it encodes: look-ups and updates go through it, each page's under
    /// <see cref="LockFor"/>.
    /// </summary>
    public readonly struct Lease : IDisposable
    {
        private readonly DeltaPageCache _cache;

        internal Lease(DeltaPageCache cache) => _cache = cache;

        /// <summary>False when the cache has no slot (sized 0): every page goes whole.</summary>
        public bool HasRoom => _cache._table.Slots > 0;

        /// <summary>The lock of <paramref name="pfn"/>'s set: held over a page's look-up, encoding, update.</summary>
        public object LockFor(long pfn) => _cache._stripes[_cache._table.SetOf(pfn) & (StripeCount - 1)];

        /// <summary>
        /// Whether <paramref name="pfn"/>'s set has an empty slot: round 0 fills the cache only where that evicts
        /// nothing. Read without the set lock, it is a hint (another channel may take the slot first).
        /// </summary>
        public bool HasFreeSlot(long pfn) => _cache._table.HasFree(pfn);

        /// <summary>The entry of <paramref name="pfn"/> if the cache holds one (under <see cref="LockFor"/>).</summary>
        public bool TryGet(long pfn, out Entry entry) => _cache._table.TryGet(pfn, out entry);

        /// <summary>
        /// Remembers <paramref name="bytes"/> as what was sent of <paramref name="pfn"/> in <paramref name="round"/> on
        /// <paramref name="channel"/>: over its entry when it has one, else over the set's oldest entry (under
        /// <see cref="LockFor"/>). No-op when the cache has no slot.
        /// </summary>
        public void Put(long pfn, uint round, int channel, ReadOnlySpan<byte> bytes) =>
            _cache._table.Put(pfn, round, channel, bytes, zero: false);

        /// <summary>
        /// <paramref name="pfn"/> went as a zero page: its entry, if it has one, now holds zeros (no bytes copied). A
        /// zero page evicts nothing.
        /// </summary>
        public void PutZero(long pfn, uint round, int channel)
        {
            if (_cache._table.TryGet(pfn, out _))
            {
                _cache._table.Put(pfn, round, channel, default, zero: true);
            }
        }

        public void Dispose() => _cache?._resize.ExitReadLock(); // a default lease holds nothing
    }

    /// <summary>
    /// A cached page: the round and channel its copy went in, and its bytes (empty when <see cref="Zero"/>: the page
    /// went as a zero page). Valid only under the set lock of the lease it came from.
    /// </summary>
    public readonly ref struct Entry
    {
        internal Entry(uint round, int channel, bool zero, ReadOnlySpan<byte> bytes)
        {
            Round = round;
            Channel = channel;
            Zero = zero;
            Bytes = bytes;
        }

        public uint Round { get; }

        public int Channel { get; }

        public bool Zero { get; }

        public ReadOnlySpan<byte> Bytes { get; }
    }

    /// <summary>One size of the cache: the slots' bookkeeping in arrays, their pages in one native block.</summary>
    private sealed unsafe class Table : IDisposable
    {
        private readonly long[] _pfn;
        private readonly uint[] _round;
        private readonly int[] _channel;
        private readonly bool[] _zero;
        private readonly int[] _page; // the slot's page in the block, handed out in order of first use; -1: none yet
        private int _pagesUsed;
        private readonly GuestRam? _block; // 4 MiB and up: a mapping with huge pages (one fault per 2 MiB)
        private byte* _data;

        public Table(int slots)
        {
            Slots = slots;
            Sets = slots / Ways;
            _pfn = new long[slots];
            Array.Fill(_pfn, -1L);
            _round = new uint[slots];
            _channel = new int[slots];
            _zero = new bool[slots];
            _page = new int[slots];
            Array.Fill(_page, -1);
            // Untouched pages cost no memory, and slots take their pages from the front of the block as they are
            // first filled, so what the cache costs grows with what it holds (spread over the block by set, a cache
            // holding 13,000 pages touched every huge page of 256 MiB). A cache of 4 MiB and up is mapped as guest RAM
            // is, with transparent huge pages: one fault per 2 MiB as it fills (backing the whole block up front with
            // MADV_POPULATE_WRITE cost this VM 0.5-1.4 s for 256 MiB, more than filling it did).
            long bytes = (long)slots * PageGeometry.PageSize;
            if (bytes >= PageGeometry.MinRamBytes)
            {
                _block = GuestRam.Allocate(bytes);
                _data = _block.BasePointer;
            }
            else
            {
                _data = slots == 0 ? null : (byte*)NativeMemory.Alloc((nuint)slots, (nuint)PageGeometry.PageSize);
            }
        }

        public int Slots { get; }

        private int Sets { get; }

        public int SetOf(long pfn) => Sets == 0 ? 0 : (int)((ulong)pfn % (ulong)Sets);

        public bool TryGet(long pfn, out Entry entry)
        {
            int slot = Find(pfn);
            if (slot < 0)
            {
                entry = default;
                return false;
            }

            entry = new Entry(_round[slot], _channel[slot], _zero[slot], _zero[slot] ? default : Page(slot));
            return true;
        }

        public bool HasFree(long pfn)
        {
            if (Slots == 0)
            {
                return false;
            }

            int first = SetOf(pfn) * Ways;
            return Array.IndexOf(_pfn, -1L, first, Ways) >= 0;
        }

        public void Put(long pfn, uint round, int channel, ReadOnlySpan<byte> bytes, bool zero)
        {
            if (Slots == 0)
            {
                return;
            }

            int slot = Find(pfn);
            if (slot < 0)
            {
                slot = Victim(SetOf(pfn) * Ways);
            }

            _pfn[slot] = pfn;
            _round[slot] = round;
            _channel[slot] = channel;
            _zero[slot] = zero;
            if (!zero && _page[slot] < 0)
            {
                _page[slot] = Interlocked.Increment(ref _pagesUsed) - 1; // one page per slot at most: within the block
            }

            if (!zero)
            {
                bytes.CopyTo(Page(slot));
            }
        }

        public int Count()
        {
            int n = 0;
            foreach (long pfn in _pfn)
            {
                n += pfn >= 0 ? 1 : 0;
            }

            return n;
        }

        /// <summary>Copies the most recently sent entries into <paramref name="table"/>, as many as it takes.</summary>
        public void MoveInto(Table table)
        {
            if (table.Slots == 0)
            {
                return;
            }

            var order = new List<int>(Slots);
            for (int slot = 0; slot < Slots; slot++)
            {
                if (_pfn[slot] >= 0)
                {
                    order.Add(slot);
                }
            }

            order.Sort((a, b) => _round[b].CompareTo(_round[a]));
            foreach (int slot in order)
            {
                long pfn = _pfn[slot];
                int first = table.SetOf(pfn) * Ways;
                for (int way = 0; way < Ways; way++)
                {
                    if (table._pfn[first + way] < 0)
                    {
                        table.Put(pfn, _round[slot], _channel[slot], _zero[slot] ? default : Page(slot), _zero[slot]);
                        break;
                    }
                }
            }
        }

        public void Dispose()
        {
            if (_block is not null)
            {
                _block.Dispose();
            }
            else if (_data is not null)
            {
                NativeMemory.Free(_data);
            }

            _data = null;
        }

        private Span<byte> Page(int slot) =>
            new(_data + ((long)_page[slot] * PageGeometry.PageSize), PageGeometry.PageSize);

        private int Find(long pfn)
        {
            if (Slots == 0)
            {
                return -1;
            }

            int first = SetOf(pfn) * Ways;
            for (int way = 0; way < Ways; way++)
            {
                if (_pfn[first + way] == pfn)
                {
                    return first + way;
                }
            }

            return -1;
        }

        /// <summary>An empty slot of the set, else the one whose copy went in the oldest round.</summary>
        private int Victim(int first)
        {
            int victim = first;
            for (int way = 0; way < Ways; way++)
            {
                int slot = first + way;
                if (_pfn[slot] < 0)
                {
                    return slot;
                }

                if (_round[slot] < _round[victim])
                {
                    victim = slot;
                }
            }

            return victim;
        }
    }
}
