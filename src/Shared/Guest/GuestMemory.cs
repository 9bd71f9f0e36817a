using System.Runtime.CompilerServices;
using Migration.Shared.Concurrency;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Internal;

namespace Migration.Shared.Guest;

/// <summary>
/// The guest's one write path: every store the guest kernel or a workload makes lands here, is stored into
/// <see cref="GuestRam"/>, and only then marks the page in the <see cref="DirtyLog"/> (store first, then mark; DESIGN
/// section 4, race R7). Reads are plain loads.
/// </summary>
/// <remarks>
/// Accessors take a guest-physical address. Scalar accesses must not cross a page; span writes may, and mark each
/// page once its bytes are stored.
/// </remarks>
public sealed unsafe class GuestMemory
{
    private readonly byte* _base;
    private readonly long _size;
    private readonly SchedulingPoints _scheduling;
    private readonly bool _markBeforeStore; // R7's mutant (HotPathDefences.StoreBeforeMark false)
    private readonly Action<long>? _stored;

    public GuestMemory(GuestRam ram, DirtyLog log)
        : this(ram, log, SchedulingPoints.None, HotPathDefences.Production, storeObserver: null)
    {
    }

    /// <param name="storeObserver">
    /// Told the page of every store once it landed and was logged: the race fuzzer's bookkeeping.
    /// </param>
    internal GuestMemory(GuestRam ram, DirtyLog log, SchedulingPoints scheduling, HotPathDefences defences,
        Action<long>? storeObserver)
    {
        ArgumentNullException.ThrowIfNull(ram);
        ArgumentNullException.ThrowIfNull(log);
        if (log.PageCount != ram.PageCount)
        {
            throw new ArgumentException(
                $"Dirty log covers {log.PageCount} pages, RAM has {ram.PageCount}.", nameof(log));
        }

        Ram = ram;
        Log = log;
        _base = ram.BasePointer;
        _size = ram.SizeBytes;
        _scheduling = scheduling;
        _markBeforeStore = !defences.StoreBeforeMark;
        _stored = storeObserver;
    }

    public SchedulingPoints Scheduling => _scheduling;

    public GuestRam Ram { get; }

    public DirtyLog Log { get; }

    public long PageCount => Ram.PageCount;

    public void WriteByte(long gpa, byte value)
    {
        Check(gpa, 1);
        BeforeStore(gpa >> PageGeometry.PageShift);
        _base[gpa] = value;
        AfterStore(gpa >> PageGeometry.PageShift);
    }

    public void WriteUInt32(long gpa, uint value)
    {
        Check(gpa, 4);
        BeforeStore(gpa >> PageGeometry.PageShift);
        Unsafe.WriteUnaligned(_base + gpa, value);
        AfterStore(gpa >> PageGeometry.PageShift);
    }

    public void WriteUInt64(long gpa, ulong value)
    {
        Check(gpa, 8);
        BeforeStore(gpa >> PageGeometry.PageShift);
        Unsafe.WriteUnaligned(_base + gpa, value);
        AfterStore(gpa >> PageGeometry.PageShift);
    }

    public byte ReadByte(long gpa)
    {
        Check(gpa, 1);
        return Volatile.Read(ref _base[gpa]);
    }

    public uint ReadUInt32(long gpa)
    {
        Check(gpa, 4);
        return Unsafe.ReadUnaligned<uint>(_base + gpa);
    }

    public ulong ReadUInt64(long gpa)
    {
        Check(gpa, 8);
        return Unsafe.ReadUnaligned<ulong>(_base + gpa);
    }

    /// <summary>
    /// Stores <paramref name="data"/> at <paramref name="gpa"/>, page by page, marking each page after its part.
    /// </summary>
    public void Write(long gpa, ReadOnlySpan<byte> data)
    {
        CheckRange(gpa, data.Length);
        while (!data.IsEmpty)
        {
            int inPage = PageGeometry.PageSize - (int)(gpa & (PageGeometry.PageSize - 1));
            int n = Math.Min(inPage, data.Length);
            Ram.EnsurePresent(gpa >> PageGeometry.PageShift);
            BeforeStore(gpa >> PageGeometry.PageShift);
            data[..n].CopyTo(new Span<byte>(_base + gpa, n));
            AfterStore(gpa >> PageGeometry.PageShift);
            data = data[n..];
            gpa += n;
        }
    }

    /// <summary>
    /// Fills whole pages with one byte value (poisoning, zeroing), marking each page after it is filled.
    /// </summary>
    public void FillPages(long firstPfn, long count, byte value)
    {
        Ram.CheckRange(firstPfn, count);
        for (long pfn = firstPfn; pfn < firstPfn + count; pfn++)
        {
            Ram.EnsurePresent(pfn);
            BeforeStore(pfn);
            new Span<byte>(_base + (pfn << PageGeometry.PageShift), PageGeometry.PageSize).Fill(value);
            AfterStore(pfn);
        }
    }

    /// <summary>
    /// Fills a page with a pseudo-random pattern derived from <paramref name="seed"/>, leaving the first
    /// <paramref name="skipBytes"/> bytes untouched (they hold the page's stamp). Marks the page after the store.
    /// </summary>
    public void FillPagePattern(long pfn, ulong seed, int skipBytes)
    {
        Ram.CheckPage(pfn);
        Ram.EnsurePresent(pfn);
        BeforeStore(pfn);
        var words = new Span<ulong>(_base + (pfn << PageGeometry.PageShift), PageGeometry.PageSize / sizeof(ulong));
        ulong x = seed | 1;
        for (int i = (skipBytes + 7) / 8; i < words.Length; i++)
        {
            // xorshift64: cheap, and distinct for each (page, generation, write) seed.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            words[i] = x;
        }

        AfterStore(pfn);
    }

    /// <summary>
    /// Read-only view of one page (for checks; the host migration path uses <see cref="GuestRam"/> directly).
    /// </summary>
    public ReadOnlySpan<byte> ReadPage(long pfn) => Ram.Page(pfn);

    // Store first, then mark (R7). The yield point between the two is where a sync and a send may run.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void BeforeStore(long pfn)
    {
        if (_markBeforeStore)
        {
            Log.MarkDirty(pfn);
            _scheduling.Preempt(); // R7: the window between the early mark and the store
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void AfterStore(long pfn)
    {
        if (!_markBeforeStore)
        {
            _scheduling.BetweenStoreAndMark();
            if (Log.MarkDirty(pfn))
            {
                VcpuThrottle.CountDirtied(); // the vCPU's dirty rate, which a dirty-rate ceiling holds
            }
        }

        // After the mark: the fuzzer's R6 oracle dates a write by when the log can report it. Told at the store, a
        // sync and a hint could run in the yield above and the late mark would look like a page back without a write.
        _stored?.Invoke(pfn);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Check(long gpa, int length)
    {
        if ((ulong)gpa > (ulong)(_size - length))
        {
            ThrowHelper.AddressOutOfRange(gpa, length, _size);
        }

        if (((gpa & (PageGeometry.PageSize - 1)) + length) > PageGeometry.PageSize)
        {
            ThrowHelper.CrossesPage(gpa, length);
        }

        Ram.EnsurePresent(gpa >> PageGeometry.PageShift); // postcopy: the page is there before it is touched
    }

    private void CheckRange(long gpa, int length)
    {
        if (gpa < 0 || gpa > _size - length)
        {
            ThrowHelper.AddressOutOfRange(gpa, length, _size);
        }
    }
}
