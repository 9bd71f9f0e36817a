using System.Numerics;
using System.Runtime.InteropServices;
using Migration.Shared.Internal;

namespace Migration.Shared.DirtyTracking;

/// <summary>
/// One bit per guest page with a running count of set bits. The migration bitmap ("pages the engine still has to
/// send") is one of these.
/// </summary>
/// <remarks>
/// Not thread-safe: the owner serialises access (the precopy engine holds its bitmap lock while syncing into it,
/// sending from it, or applying a hint to it, as QEMU's <c>bitmap_mutex</c> does). Scans skip empty words with the
/// vectorised <see cref="MemoryExtensions.IndexOfAnyExcept{T}(ReadOnlySpan{T}, T)"/>.
/// </remarks>
public sealed class PageBitmap
{
    private readonly ulong[] _words;

    public PageBitmap(long pageCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pageCount);
        PageCount = pageCount;
        _words = new ulong[(pageCount + 63) >> 6];
    }

    public long PageCount { get; }

    /// <summary>Number of set bits.</summary>
    public long Count { get; private set; }

    internal Span<ulong> Words => _words;

    public bool Get(long pfn)
    {
        CheckPage(pfn);
        return (_words[pfn >> 6] & (1UL << (int)(pfn & 63))) != 0;
    }

    /// <summary>Sets a bit; returns true when it was clear.</summary>
    public bool Set(long pfn)
    {
        CheckPage(pfn);
        ref ulong w = ref _words[pfn >> 6];
        ulong bit = 1UL << (int)(pfn & 63);
        if ((w & bit) != 0)
        {
            return false;
        }

        w |= bit;
        Count++;
        return true;
    }

    /// <summary>Clears a bit; returns true when it was set.</summary>
    public bool Clear(long pfn)
    {
        CheckPage(pfn);
        ref ulong w = ref _words[pfn >> 6];
        ulong bit = 1UL << (int)(pfn & 63);
        if ((w & bit) == 0)
        {
            return false;
        }

        w &= ~bit;
        Count--;
        return true;
    }

    public void SetAll()
    {
        Array.Fill(_words, ulong.MaxValue);
        int tail = (int)(PageCount & 63);
        if (tail != 0)
        {
            _words[^1] = (1UL << tail) - 1;
        }

        Count = PageCount;
    }

    public void ClearAll()
    {
        Array.Clear(_words);
        Count = 0;
    }

    /// <summary>
    /// ORs <paramref name="bits"/> into word <paramref name="wordIndex"/>; returns how many bits were new.
    /// </summary>
    public int OrWord(int wordIndex, ulong bits)
    {
        ref ulong w = ref _words[wordIndex];
        int added = BitOperations.PopCount(bits & ~w);
        w |= bits;
        Count += added;
        return added;
    }

    /// <summary>Clears every bit in [first, first+count); returns how many were set.</summary>
    public long ClearRange(long firstPfn, long count)
    {
        long cleared = ChangeRange(firstPfn, count, set: false);
        Count -= cleared;
        return cleared;
    }

    /// <summary>Counts the set bits in [first, first+count).</summary>
    public long CountRange(long firstPfn, long count)
    {
        CheckRange(firstPfn, count);
        long n = 0;
        long pfn = firstPfn;
        long end = firstPfn + count;
        while (pfn < end)
        {
            int bit = (int)(pfn & 63);
            int take = (int)Math.Min(64 - bit, end - pfn);
            ulong mask = (take == 64 ? ulong.MaxValue : ((1UL << take) - 1)) << bit;
            n += BitOperations.PopCount(_words[pfn >> 6] & mask);
            pfn += take;
        }

        return n;
    }

    /// <summary>The bits as bytes, bit p in byte p/8 (least significant first): the wire form of a page map.</summary>
    public byte[] ToBytes()
    {
        var bytes = new byte[(PageCount + 7) >> 3];
        MemoryMarshal.AsBytes(_words.AsSpan())[..bytes.Length].CopyTo(bytes); // little-endian hosts only (x64, arm64)
        return bytes;
    }

    /// <summary>
    /// A map of <paramref name="pageCount"/> pages from <see cref="ToBytes"/>'s form; null when the length is wrong or
    /// a bit beyond the last page is set.
    /// </summary>
    public static PageBitmap? FromBytes(ReadOnlySpan<byte> bytes, long pageCount)
    {
        if (pageCount <= 0 || bytes.Length != (pageCount + 7) >> 3)
        {
            return null;
        }

        var map = new PageBitmap(pageCount);
        bytes.CopyTo(MemoryMarshal.AsBytes(map._words.AsSpan()));
        int tail = (int)(pageCount & 63);
        if (tail != 0 && (map._words[^1] >> tail) != 0)
        {
            return null;
        }

        long count = 0;
        foreach (ulong word in map._words)
        {
            count += BitOperations.PopCount(word);
        }

        map.Count = count;
        return map;
    }

    /// <summary>First set bit at or after <paramref name="fromPfn"/>, or -1.</summary>
    public long FindNextSet(long fromPfn)
    {
        if (fromPfn >= PageCount)
        {
            return -1;
        }

        long wi = fromPfn >> 6;
        ulong first = _words[wi] & (ulong.MaxValue << (int)(fromPfn & 63));
        if (first != 0)
        {
            return (wi << 6) + BitOperations.TrailingZeroCount(first);
        }

        ReadOnlySpan<ulong> rest = _words.AsSpan((int)wi + 1);
        int k = rest.IndexOfAnyExcept(0UL);
        if (k < 0)
        {
            return -1;
        }

        long idx = wi + 1 + k;
        return (idx << 6) + BitOperations.TrailingZeroCount(_words[idx]);
    }

    /// <summary>First clear bit at or after <paramref name="fromPfn"/>, or <see cref="PageCount"/>.</summary>
    public long FindNextClear(long fromPfn)
    {
        if (fromPfn >= PageCount)
        {
            return PageCount;
        }

        long wi = fromPfn >> 6;
        ulong first = ~_words[wi] & (ulong.MaxValue << (int)(fromPfn & 63));
        if (first != 0)
        {
            return Math.Min(PageCount, (wi << 6) + BitOperations.TrailingZeroCount(first));
        }

        ReadOnlySpan<ulong> rest = _words.AsSpan((int)wi + 1);
        int k = rest.IndexOfAnyExcept(ulong.MaxValue);
        if (k < 0)
        {
            return PageCount;
        }

        long idx = wi + 1 + k;
        return Math.Min(PageCount, (idx << 6) + BitOperations.TrailingZeroCount(~_words[idx]));
    }

    /// <summary>The runs of set bits, in page order, as (first, count).</summary>
    public IEnumerable<(long First, long Count)> SetRuns()
    {
        for (long p = FindNextSet(0); p >= 0;)
        {
            long end = FindNextClear(p);
            yield return (p, end - p);
            p = FindNextSet(end);
        }
    }

    /// <summary>Sets every bit in [first, first+count); returns how many were clear.</summary>
    public long SetRange(long firstPfn, long count)
    {
        long set = ChangeRange(firstPfn, count, set: true);
        Count += set;
        return set;
    }

    /// <summary>Sets or clears [first, first+count) a word at a time; returns how many bits changed.</summary>
    private long ChangeRange(long firstPfn, long count, bool set)
    {
        CheckRange(firstPfn, count);
        long changed = 0;
        long pfn = firstPfn;
        long end = firstPfn + count;
        while (pfn < end)
        {
            int bit = (int)(pfn & 63);
            int n = (int)Math.Min(64 - bit, end - pfn);
            ulong mask = (n == 64 ? ulong.MaxValue : ((1UL << n) - 1)) << bit;
            ref ulong w = ref _words[pfn >> 6];
            changed += BitOperations.PopCount((set ? ~w : w) & mask);
            w = set ? w | mask : w & ~mask;
            pfn += n;
        }

        return changed;
    }

    private void CheckPage(long pfn)
    {
        if ((ulong)pfn >= (ulong)PageCount)
        {
            ThrowHelper.PageOutOfRange(pfn, PageCount);
        }
    }

    private void CheckRange(long firstPfn, long count)
    {
        if (firstPfn < 0 || count < 0 || firstPfn > PageCount - count)
        {
            ThrowHelper.RangeOutOfRange(firstPfn, count, PageCount);
        }
    }
}
