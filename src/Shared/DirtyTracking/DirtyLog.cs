using System.Numerics;
using Migration.Shared.Concurrency;
using Migration.Shared.Internal;

namespace Migration.Shared.DirtyTracking;

/// <summary>
/// The write log: one bit per guest page, set by the guest write path after every store, fetched into the
/// migration bitmap by a sync. Models KVM's dirty log in both of its modes (see <see cref="DirtyLogMode"/>).
/// </summary>
/// <remarks>
/// <para>
/// A set bit means the page is <em>un-armed</em>: it has been written since tracking was last re-armed for it, and
/// further writes need not (in manual mode: will not) be logged again. A clear bit means the page is armed: the next
/// write logs it. In eager mode a sync clears the bits it fetched, re-arming those pages at once. In manual mode a
/// sync leaves them set, so writes between the sync and the chunk's clear are not logged; the engine must clear a
/// chunk before it reads that chunk's pages for sending, or those writes are lost (DESIGN race R5 builds on this).
/// </para>
/// <para>
/// Ordering contract with the write path: the guest stores first, then calls <see cref="MarkDirty"/>, which issues
/// a full fence before it looks at the bit. A sync that races a store therefore either fetches the bit or happens
/// before the mark, and then the next sync fetches it; a sender reading after the sync sees the new bytes.
/// </para>
/// </remarks>
public sealed class DirtyLog
{
    /// <summary>QEMU clears the KVM log in 1 GiB chunks by default (262144 pages of 4 KiB).</summary>
    public const long DefaultClearChunkPages = 1L << 18;

    private readonly ulong[] _log;

    // Manual mode: the bits the last sync fetched. A chunk clear re-arms exactly these, as KVM_CLEAR_DIRTY_LOG clears
    // only the bits of the bitmap the caller passes in; a page first logged after the sync keeps its bit.
    private readonly ulong[]? _fetched;

    // Manual mode: 1 for each chunk the last sync found dirty and that has not been cleared since (QEMU's clear_bmap).
    private readonly int[]? _chunkNeedsClear;
    private readonly int _wordsPerChunk;
    private readonly StripedCounter _pagesLogged = new();
    private readonly SchedulingPoints _scheduling;
    private readonly bool _atomicFetch;
    private readonly Action<bool>? _syncObserver;
    private volatile bool _enabled;
    private long _syncs;

    public DirtyLog(long pageCount, DirtyLogMode mode, long clearChunkPages = DefaultClearChunkPages)
        : this(pageCount, mode, clearChunkPages, SchedulingPoints.None, HotPathDefences.Production, syncObserver: null)
    {
    }

    /// <param name="syncObserver">
    /// Told when a sync starts (true) and ends (false): the race fuzzer's bookkeeping.
    /// </param>
    internal DirtyLog(long pageCount, DirtyLogMode mode, long clearChunkPages, SchedulingPoints scheduling,
        HotPathDefences defences, Action<bool>? syncObserver)
    {
        _scheduling = scheduling;
        _atomicFetch = defences.AtomicLogFetch;
        _syncObserver = syncObserver;
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pageCount);
        if (clearChunkPages <= 0 || (clearChunkPages & 63) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(clearChunkPages), clearChunkPages,
                "The clear chunk must be a positive multiple of 64 pages (KVM clears whole bitmap words).");
        }

        PageCount = pageCount;
        Mode = mode;
        _log = new ulong[(pageCount + 63) >> 6];
        ClearChunkPages = Math.Min(clearChunkPages, (long)_log.Length << 6);
        _wordsPerChunk = (int)(ClearChunkPages >> 6);
        if (mode == DirtyLogMode.Manual)
        {
            _fetched = new ulong[_log.Length];
            _chunkNeedsClear = new int[(_log.Length + _wordsPerChunk - 1) / _wordsPerChunk];
        }
    }

    public long PageCount { get; }

    public DirtyLogMode Mode { get; }

    /// <summary>Pages covered by one <see cref="ClearChunk"/> in manual mode.</summary>
    public long ClearChunkPages { get; }

    public int ChunkCount => (int)((PageCount + ClearChunkPages - 1) / ClearChunkPages);

    /// <summary>
    /// Whether stores are being logged (migration running). Off costs the write path one volatile read.
    /// </summary>
    public bool Enabled => _enabled;

    /// <summary>Syncs performed since construction.</summary>
    public long Syncs => Interlocked.Read(ref _syncs);

    /// <summary>Pages that went from armed to logged, summed over all time: the numerator of the dirty rate.</summary>
    public long PagesLogged => _pagesLogged.Sum();

    /// <summary>Starts logging with every page armed.</summary>
    public void Enable()
    {
        Array.Clear(_log);
        if (_fetched is not null)
        {
            Array.Clear(_fetched);
            Array.Clear(_chunkNeedsClear!);
        }

        _enabled = true;
        Interlocked.MemoryBarrier();
    }

    /// <summary>
    /// Stops logging (migration over or failed). Bits left behind are discarded at the next <see cref="Enable"/>.
    /// </summary>
    public void Disable() => _enabled = false;

    /// <summary>
    /// Records that the page was written. Call only <em>after</em> the store (see the ordering contract above).
    /// Returns whether this store logged the page (it was armed), which is what a dirty rate counts.
    /// </summary>
    public bool MarkDirty(long pfn)
    {
        if (!_enabled)
        {
            return false;
        }

        if ((ulong)pfn >= (ulong)PageCount)
        {
            ThrowHelper.PageOutOfRange(pfn, PageCount);
        }

        // Full fence: the store must be visible before we decide, from the bit, whether to log. Without it x86 may
        // satisfy the bit load before the store drains; a sync in between would fetch the bit, a sender would read the
        // old bytes, and we would skip the mark.
        Interlocked.MemoryBarrier();
        ref ulong word = ref _log[pfn >> 6];
        ulong bit = 1UL << (int)(pfn & 63);
        if ((Volatile.Read(ref word) & bit) != 0)
        {
            return false; // un-armed: already logged and not yet re-armed
        }

        ulong before = Interlocked.Or(ref word, bit);
        if ((before & bit) != 0)
        {
            return false;
        }

        _pagesLogged.Add(1);
        return true;
    }

    /// <summary>
    /// Moves the log into <paramref name="target"/> (OR). Eager mode clears what it fetched, word by word with an
    /// atomic exchange; manual mode only fetches and marks the dirty chunks as needing a clear.
    /// Returns the number of pages the log reported.
    /// </summary>
    public long SyncInto(PageBitmap target)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (target.PageCount != PageCount)
        {
            throw new ArgumentException(
                $"Bitmap covers {target.PageCount} pages, the log {PageCount}.", nameof(target));
        }

        _syncObserver?.Invoke(true);
        long reported = 0;
        Span<ulong> log = _log;
        for (int i = 0; i < log.Length; i++)
        {
            if (Volatile.Read(ref log[i]) == 0)
            {
                continue;
            }

            ulong bits;
            if (Mode == DirtyLogMode.Eager && _atomicFetch)
            {
                // One atomic fetch-and-clear per word: a mark landing between a separate read and clear would be
                // wiped without being reported (race R8).
                bits = Interlocked.Exchange(ref log[i], 0);
            }
            else if (Mode == DirtyLogMode.Eager)
            {
                bits = FetchThenClear(ref log[i]);
            }
            else
            {
                bits = Volatile.Read(ref log[i]);
                _fetched![i] = bits;
                Volatile.Write(ref _chunkNeedsClear![i / _wordsPerChunk], 1);
            }

            reported += BitOperations.PopCount(bits);
            target.OrWord(i, bits);
            _scheduling.Yield(); // writers run on during a sync
        }

        Interlocked.Increment(ref _syncs);
        _syncObserver?.Invoke(false);
        return reported;
    }

    /// <summary>
    /// Manual mode: re-arms the pages of chunk <paramref name="chunk"/> that the last sync fetched, if it has not been
    /// cleared since. Returns the number of log bits cleared. A no-op in eager mode.
    /// </summary>
    public long ClearChunk(int chunk)
    {
        if (Mode == DirtyLogMode.Eager)
        {
            return 0;
        }

        if ((uint)chunk >= (uint)_chunkNeedsClear!.Length)
        {
            throw new ArgumentOutOfRangeException(
                nameof(chunk), chunk, $"The log has {_chunkNeedsClear.Length} chunks.");
        }

        if (Interlocked.Exchange(ref _chunkNeedsClear[chunk], 0) == 0)
        {
            return 0;
        }

        long cleared = 0;
        int first = chunk * _wordsPerChunk;
        int end = Math.Min(first + _wordsPerChunk, _log.Length);
        for (int i = first; i < end; i++)
        {
            ulong snap = _fetched![i];
            if (snap == 0)
            {
                continue;
            }

            _fetched[i] = 0;
            ulong before = Interlocked.And(ref _log[i], ~snap);
            cleared += BitOperations.PopCount(before & snap);
        }

        return cleared;
    }

    /// <summary>Manual mode: <see cref="ClearChunk"/> for the chunk holding <paramref name="pfn"/>.</summary>
    public long ClearChunkContaining(long pfn)
    {
        if ((ulong)pfn >= (ulong)PageCount)
        {
            ThrowHelper.PageOutOfRange(pfn, PageCount);
        }

        return ClearChunk(ChunkOf(pfn));
    }

    public int ChunkOf(long pfn) => (int)(pfn / ClearChunkPages);

    /// <summary>
    /// Manual mode: <see cref="ClearChunk"/> for every chunk overlapping the range. Returns log bits cleared.
    /// </summary>
    public long ClearChunksCovering(long firstPfn, long count)
    {
        if (Mode == DirtyLogMode.Eager || count <= 0)
        {
            return 0;
        }

        long cleared = 0;
        for (int chunk = ChunkOf(firstPfn); chunk <= ChunkOf(firstPfn + count - 1); chunk++)
        {
            cleared += ClearChunk(chunk);
        }

        return cleared;
    }

    /// <summary>The R8 mutant's sync of one word (<see cref="HotPathDefences.AtomicLogFetch"/> false).</summary>
    private ulong FetchThenClear(ref ulong word)
    {
        ulong bits = Volatile.Read(ref word);
        _scheduling.Preempt(); // a mark landing here is wiped by the write below without being reported
        Volatile.Write(ref word, 0);
        return bits;
    }

    /// <summary>
    /// Overwrites the raw log words (benchmarks set up a dirty pattern without paying the write path).
    /// </summary>
    internal void LoadRawWords(ReadOnlySpan<ulong> words) => words.CopyTo(_log);

    /// <summary>Whether the page is currently logged (un-armed). For tests and diagnostics.</summary>
    public bool IsLogged(long pfn)
    {
        if ((ulong)pfn >= (ulong)PageCount)
        {
            ThrowHelper.PageOutOfRange(pfn, PageCount);
        }

        return (Volatile.Read(ref _log[pfn >> 6]) & (1UL << (int)(pfn & 63))) != 0;
    }
}
