using System.Diagnostics;
using System.Runtime.InteropServices;
using Migration.Shared.DirtyTracking;

namespace Migration.Shared.Guest.Postcopy;

/// <summary>
/// The target's guest RAM while postcopy fills it: the RAM is registered with a <see cref="Userfaultfd"/>, the guest
/// runs, and a thread touching a page that has not arrived waits in the kernel while a fault thread asks for it.
/// </summary>
/// <remarks>
/// <para>
/// Three kinds of page (DESIGN P2-P4 in docs/design.md): a page in <c>fetch</c> comes from the source, pushed or
/// asked for, and is missing here until it is placed; a missing page in <c>fill</c> (free by a hint, ballooned or
/// discarded: the source never sends it) is resolved here with the fill byte (the guest's poison value, or zero), and
/// any other missing page with zero (a zero page the source sent in precopy and a fresh target never wrote). Every
/// other page holds what precopy left, which the source's final sync found current.
/// </para>
/// <para>
/// A page is placed once (<see cref="Place"/>): a push and an answer for the same page carry the same bytes, since the
/// source guest is stopped, and the second placement finds the first and changes nothing the guest wrote since.
/// </para>
/// </remarks>
public sealed unsafe class PostcopyRam : IDisposable
{
    private readonly GuestRam _ram;
    private readonly PageBitmap _fetch;
    private readonly PageBitmap? _fill;
    private readonly byte _fillByte;
    private readonly Action<long> _request;
    private readonly byte* _base;
    private readonly ulong[] _mapped; // set: the page is mapped (placed, or seen by the guard); read without a lock
    private readonly ulong[] _placed; // set: placed by this class, once (counted, its waiters timed)
    private readonly ulong[] _requested; // set: asked of the source (once)
    private readonly byte* _fillPage; // a page of _fillByte, for UFFDIO_COPY
    private readonly object _waitersGate = new();
    private readonly Dictionary<long, List<Waiter>> _waiters = []; // faults on a page asked for and not yet placed
    private readonly Dictionary<int, long> _blockedTicksByThread = []; // under _waitersGate
    private readonly TaskCompletionSource _allArrived = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Userfaultfd? _uffd;
    private Thread? _faultThread;
    private volatile bool _stopping;
    private volatile bool _abandoned;
    private int _disposed;
    private long _pagesDiscarded;
    private long _remaining;
    private long _faults;
    private long _localFaults;
    private long _pagesRequested;
    private long _pagesPlaced;
    private long _placementsFound; // placements that found the page already there

    /// <param name="ram">The guest's RAM, holding what precopy delivered (or nothing, for a pure postcopy).</param>
    /// <param name="fetch">The pages the source still sends: their copies here are dropped at <see cref="Start"/>.</param>
    /// <param name="fill">The pages the source never sends; null: none.</param>
    /// <param name="fillByte">What a never-sent page reads here: the guest's poison value, or zero.</param>
    /// <param name="request">
    /// Asks the source for a page; called on the fault thread, once per page, and must not block.
    /// </param>
    public PostcopyRam(GuestRam ram, PageBitmap fetch, PageBitmap? fill, byte fillByte, Action<long> request)
    {
        ArgumentNullException.ThrowIfNull(ram);
        ArgumentNullException.ThrowIfNull(fetch);
        ArgumentNullException.ThrowIfNull(request);
        if (fetch.PageCount != ram.PageCount || (fill is not null && fill.PageCount != ram.PageCount))
        {
            throw new ArgumentException($"maps for {fetch.PageCount} pages, RAM has {ram.PageCount}", nameof(fetch));
        }

        _ram = ram;
        _fetch = fetch;
        _fill = fill;
        _fillByte = fillByte;
        _request = request;
        _base = ram.BasePointer;
        long words = (ram.PageCount + 63) / 64;
        _mapped = new ulong[words];
        _placed = new ulong[words];
        _requested = new ulong[words];
        _remaining = fetch.Count;
        _fillPage = (byte*)NativeMemory.AlignedAlloc(PageGeometry.PageSize, PageGeometry.PageSize);
        new Span<byte>(_fillPage, PageGeometry.PageSize).Fill(fillByte);
        if (_remaining == 0)
        {
            _allArrived.TrySetResult();
        }
    }

    /// <summary>Pages of <c>fetch</c> not placed yet.</summary>
    public long Remaining => Interlocked.Read(ref _remaining);

    /// <summary>Completes when every page of <c>fetch</c> is placed; faults the fault thread if it fails.</summary>
    public Task AllArrived => _allArrived.Task;

    /// <summary>Every fault's wait, from when the fault thread read it to when its page was placed.</summary>
    public FaultLatency Latency { get; } = new();

    public long Faults => Interlocked.Read(ref _faults);

    /// <summary>Faults resolved here (a never-sent or zero page), without the source.</summary>
    public long LocalFaults => Interlocked.Read(ref _localFaults);

    public long PagesRequested => Interlocked.Read(ref _pagesRequested);

    /// <summary>Pages of <c>fetch</c> placed (each once).</summary>
    public long PagesPlaced => Interlocked.Read(ref _pagesPlaced);

    /// <summary>Placements that found their page already there: a push and an answer crossed (P4).</summary>
    public long PlacementsFound => Interlocked.Read(ref _placementsFound);

    /// <summary>Time each faulting thread (by its kernel thread id) spent waiting on pages.</summary>
    public IReadOnlyDictionary<int, TimeSpan> BlockedByThread
    {
        get
        {
            lock (_waitersGate)
            {
                return _blockedTicksByThread.ToDictionary(p => p.Key, p => TimeSpan.FromTicks(p.Value));
            }
        }
    }

    /// <summary>
    /// Registers the RAM, drops this side's copies of the pages to fetch (and, with a fill byte, the never-sent
    /// pages), turns the guard on and starts the fault thread. Call with no thread touching the RAM (the guest not yet
    /// resumed).
    /// </summary>
    /// <exception cref="UserfaultfdUnavailableException">This host cannot do postcopy.</exception>
    public void Start()
    {
        if (_uffd is not null)
        {
            throw new InvalidOperationException("postcopy already started");
        }

        var uffd = Userfaultfd.Open();
        try
        {
            // Registered first: a range dropped before it could be filled again (khugepaged collapses huge-page
            // ranges with empty entries) and its pages would never fault. It stops doing so once the range is armed.
            uffd.Register((nint)_base, (nuint)_ram.SizeBytes);
            foreach (var (first, count) in _fetch.SetRuns())
            {
                _ram.DropForPostcopy(first, count); // missing from now on: faults ask the source
            }

            if (_fill is not null && _fillByte != 0)
            {
                // Never sent, so zero here, or mapped as zero on a preallocated target: dropped, so a touch faults
                // and reads the fill byte.
                foreach (var (first, count) in _fill.SetRuns())
                {
                    _ram.DropForPostcopy(first, count);
                }
            }
        }
        catch
        {
            uffd.Dispose(); // closing it unregisters the range
            throw;
        }

        _uffd = uffd;
        _ram.AttachPostcopy(this);
        _faultThread = new Thread(FaultLoop) { IsBackground = true, Name = "postcopy faults" };
        _faultThread.Start();
    }

    /// <summary>
    /// Places page <paramref name="pfn"/> with <paramref name="bytes"/> (one page) if it is still missing; false when
    /// it was already there (nothing changes). Any thread.
    /// </summary>
    public bool Place(long pfn, ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != PageGeometry.PageSize)
        {
            throw new ArgumentException($"a page is {PageGeometry.PageSize} bytes, not {bytes.Length}", nameof(bytes));
        }

        fixed (byte* source = bytes)
        {
            return PlaceRun(pfn, 1, source) == 1;
        }
    }

    /// <summary>
    /// Places <paramref name="count"/> consecutive pages from <paramref name="source"/>, skipping any already there;
    /// returns how many were placed now.
    /// </summary>
    public int PlaceRun(long firstPfn, int count, byte* source)
    {
        _ram.CheckRange(firstPfn, count);
        var uffd = Uffd;
        int placed = 0;
        if (_stopping)
        {
            return 0; // finished or abandoned: nothing is placed any more
        }

        long pfn = firstPfn;
        long end = firstPfn + count;
        while (pfn < end)
        {
            // Skip what is known to be there (counted now if no placement counted it yet: a copy that failed part
            // way, a page the guard found mapped), then place the longest run not known to be.
            if (IsPresent(pfn))
            {
                if (Arrived(pfn))
                {
                    placed++;
                }
                else
                {
                    Interlocked.Increment(ref _placementsFound);
                }

                pfn++;
                continue;
            }

            long runEnd = pfn + 1;
            while (runEnd < end && !IsPresent(runEnd))
            {
                runEnd++;
            }

            nint at = (nint)(_base + (pfn << PageGeometry.PageShift));
            nint from = (nint)(source + ((pfn - firstPfn) << PageGeometry.PageShift));
            var result = uffd.Copy(at, from, (nuint)((runEnd - pfn) << PageGeometry.PageShift), out long bytes);
            long done = bytes >> PageGeometry.PageShift;
            for (long p = pfn; p < pfn + done; p++)
            {
                placed += Arrived(p) ? 1 : 0;
            }

            pfn += done;
            if (result == Userfaultfd.Placement.Exists)
            {
                Interlocked.Increment(ref _placementsFound); // placed by another path first: it stands
                _ = Arrived(pfn);
                pfn++;
            }
        }

        return placed;
    }

    /// <summary>Places a page that the source sent as all zero.</summary>
    public bool PlaceZero(long pfn)
    {
        _ram.CheckPage(pfn);
        if (IsPresent(pfn))
        {
            Interlocked.Increment(ref _placementsFound);
            return false;
        }

        var result = Uffd.ZeroPage((nint)(_base + (pfn << PageGeometry.PageShift)), PageGeometry.PageSize);
        if (result == Userfaultfd.Placement.Exists)
        {
            Interlocked.Increment(ref _placementsFound);
        }

        return Arrived(pfn) && result == Userfaultfd.Placement.Placed;
    }

    /// <summary>
    /// Pages asked of the source and not placed yet: what a new return path asks again after a broken one (P6). An
    /// answer that crosses the new request is placed once.
    /// </summary>
    public List<long> Unanswered()
    {
        var pages = new List<long>();
        for (int w = 0; w < _requested.Length; w++)
        {
            ulong waiting = Volatile.Read(ref _requested[w]) & ~Volatile.Read(ref _placed[w]);
            while (waiting != 0)
            {
                int bit = System.Numerics.BitOperations.TrailingZeroCount(waiting);
                pages.Add(((long)w << 6) + bit);
                waiting &= waiting - 1;
            }
        }

        return pages;
    }

    /// <summary>True once page <paramref name="pfn"/> is known to be mapped.</summary>
    public bool IsPresent(long pfn) => (Volatile.Read(ref _mapped[pfn >> 6]) & (1UL << (int)(pfn & 63))) != 0;

    /// <summary>The guard (<see cref="GuestRam.EnsurePresent(long)"/>): the fast path is one load and a test.</summary>
    internal void EnsurePresent(long pfn)
    {
        if (!IsPresent(pfn))
        {
            WaitForPage(pfn);
        }
    }

    /// <summary>
    /// Ends postcopy once <see cref="AllArrived"/> has completed: never-sent pages no thread touched get the fill byte
    /// (poison), then the fault thread stops, the RAM is unregistered and the guard goes off. Every page is then mapped
    /// or reads as zero, as it should.
    /// </summary>
    public void Stop()
    {
        if (_uffd is not { } uffd || _stopping)
        {
            return;
        }

        if (_fill is not null && _fillByte != 0)
        {
            foreach (var (first, count) in _fill.SetRuns())
            {
                for (long p = first; p < first + count; p++)
                {
                    if (!IsPresent(p))
                    {
                        PlaceLocally(uffd, p);
                    }
                }
            }
        }

        End(uffd);
    }

    /// <summary>
    /// Gives the guest up (its source is lost, or it failed verification): the fault thread stops and the RAM is
    /// unregistered. A thread still waiting on a page is woken and, if it came through the guard, gets an
    /// <see cref="PostcopyAbandonedException"/> rather than a zero page it would take for the guest's; stop the vCPUs
    /// and discard the guest after this.
    /// </summary>
    public void Abandon()
    {
        if (_uffd is { } uffd && !_stopping)
        {
            _abandoned = true;
            End(uffd);
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Abandon(); // a no-op after Stop
        _uffd?.Dispose();
        NativeMemory.AlignedFree(_fillPage);
    }

    /// <summary>Pages placed locally for the guest's own discards during postcopy (<see cref="Discard"/>).</summary>
    public long PagesDiscarded => Interlocked.Read(ref _pagesDiscarded);

    /// <summary>
    /// The guest discards page <paramref name="pfn"/> (the balloon takes it): zero it and keep it mapped, since a page
    /// dropped now would fault again. A page not there yet is placed as zero here, not fetched: its bytes are thrown
    /// away anyway, and an answer that comes later finds it and changes nothing.
    /// </summary>
    public void Discard(long pfn)
    {
        _ram.CheckPage(pfn);
        byte* page = _base + (pfn << PageGeometry.PageShift);
        if (!IsPresent(pfn) && !_stopping
            && Uffd.ZeroPage((nint)page, PageGeometry.PageSize) == Userfaultfd.Placement.Placed)
        {
            _ = Arrived(pfn);
            Interlocked.Increment(ref _pagesDiscarded);
            return;
        }

        EnsurePresent(pfn);
        NativeMemory.Clear(page, PageGeometry.PageSize);
        _ = Arrived(pfn);
        Interlocked.Increment(ref _pagesDiscarded);
    }

    private void End(Userfaultfd uffd)
    {
        _stopping = true;
        uffd.Interrupt();
        _faultThread?.Join();
        try
        {
            uffd.Unregister((nint)_base, (nuint)_ram.SizeBytes); // wakes whoever still waits
        }
        catch (IOException)
        {
            // The descriptor goes at Dispose; closing it unregisters too.
        }

        _ram.DetachPostcopy(this);
    }

    private Userfaultfd Uffd => _uffd ?? throw new InvalidOperationException("postcopy not started");

    /// <summary>
    /// Marks a page placed and mapped; true if this call placed it first (a page of fetch then counts toward
    /// <see cref="AllArrived"/>, and its waiters' time is taken).
    /// </summary>
    private bool Arrived(long pfn)
    {
        ulong bit = 1UL << (int)(pfn & 63);
        _ = Interlocked.Or(ref _mapped[pfn >> 6], bit);
        if ((Interlocked.Or(ref _placed[pfn >> 6], bit) & bit) != 0)
        {
            return false;
        }

        long now = Stopwatch.GetTimestamp();
        lock (_waitersGate)
        {
            if (_waiters.Remove(pfn, out var waiters))
            {
                foreach (var w in waiters)
                {
                    long ticks = Stopwatch.GetElapsedTime(w.Since, now).Ticks;
                    Latency.Record(TimeSpan.FromTicks(ticks));
                    _blockedTicksByThread[w.ThreadId] = _blockedTicksByThread.GetValueOrDefault(w.ThreadId) + ticks;
                }
            }
        }

        if (_fetch.Get(pfn))
        {
            Interlocked.Increment(ref _pagesPlaced);
            if (Interlocked.Decrement(ref _remaining) == 0)
            {
                _allArrived.TrySetResult();
            }
        }

        return true;
    }

    // Touched from native code, so this thread waits for the page in preemptive mode (see GuestRam.Postcopy.cs).
    private void WaitForPage(long pfn)
    {
        _ = MemChr(_base + (pfn << PageGeometry.PageShift), 0, 1);
        if (_abandoned && !IsPresent(pfn))
        {
            // Woken by the unregister, the page never came: what the thread would read is not the guest's.
            throw new PostcopyAbandonedException(pfn);
        }

        _ = Interlocked.Or(ref _mapped[pfn >> 6], 1UL << (int)(pfn & 63)); // mapped now; the placer counts it
    }

    /// <summary>
    /// Places a page the source never sends: the fill byte where it is never-sent and the guest poisons, zero
    /// otherwise (a page already there stays as it is).
    /// </summary>
    private void PlaceLocally(Userfaultfd uffd, long pfn)
    {
        nint page = (nint)(_base + (pfn << PageGeometry.PageShift));
        _ = _fill is not null && _fillByte != 0 && _fill.Get(pfn)
            ? uffd.Copy(page, (nint)_fillPage, PageGeometry.PageSize, out _)
            : uffd.ZeroPage(page, PageGeometry.PageSize);
        _ = Arrived(pfn);
    }

    private void FaultLoop()
    {
        var faults = new Userfaultfd.Fault[64];
        var uffd = _uffd!;
        try
        {
            while (!_stopping)
            {
                int n = uffd.WaitForFaults(faults, -1);
                long now = Stopwatch.GetTimestamp();
                for (int i = 0; i < n; i++)
                {
                    Resolve(uffd, faults[i], now);
                }
            }
        }
#pragma warning disable CA1031 // reported through AllArrived; the guest's waiting threads are the owner's to stop
        catch (Exception ex)
#pragma warning restore CA1031
        {
            _allArrived.TrySetException(ex);
        }
    }

    private void Resolve(Userfaultfd uffd, Userfaultfd.Fault fault, long now)
    {
        long pfn = ((long)fault.Address - (long)_base) >> PageGeometry.PageShift;
        if ((ulong)pfn >= (ulong)_ram.PageCount)
        {
            return; // not ours (the range is all we registered)
        }

        Interlocked.Increment(ref _faults);
        nint page = (nint)(_base + (pfn << PageGeometry.PageShift));
        if (IsPresent(pfn))
        {
            uffd.Wake(page, PageGeometry.PageSize); // placed between the fault and its reading
            return;
        }

        if (!_fetch.Get(pfn))
        {
            // Never sent (P3), or a zero page precopy never wrote here: resolved without the source.
            Interlocked.Increment(ref _localFaults);
            PlaceLocally(uffd, pfn);
            Latency.Record(Stopwatch.GetElapsedTime(now));
            return;
        }

        lock (_waitersGate)
        {
            if (IsPresent(pfn))
            {
                uffd.Wake(page, PageGeometry.PageSize);
                return;
            }

            if (!_waiters.TryGetValue(pfn, out var list))
            {
                _waiters[pfn] = list = [];
            }

            list.Add(new Waiter(fault.ThreadId, now));
        }

        ulong bit = 1UL << (int)(pfn & 63);
        if ((Interlocked.Or(ref _requested[pfn >> 6], bit) & bit) == 0)
        {
            Interlocked.Increment(ref _pagesRequested);
            _request(pfn); // once per page: a second fault on it waits for the same answer
        }
    }

    private readonly record struct Waiter(int ThreadId, long Since);

    [DllImport("libc", EntryPoint = "memchr")]
    private static extern nint MemChr(byte* s, int c, nuint n);
}
