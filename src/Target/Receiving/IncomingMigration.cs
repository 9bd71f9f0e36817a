using Grpc.Core;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Hosting;
using Migration.Shared.Internal;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Shared.Transport;
using Migration.Shared.Verification;
using Migration.Target.Diagnostics;

namespace Migration.Target.Receiving;

/// <summary>
/// One migration being received: the guest's RAM (not yet a VM), the newest round applied to each page, and counters.
/// Several channel streams apply batches concurrently.
/// </summary>
/// <remarks>
/// Race R11 (parallel channels deliver an older copy after a newer one): each page remembers the round of the copy it
/// holds, and a copy from an older round is dropped. The check and the copy happen under a per-page stripe lock, so
/// two channels writing the same page cannot interleave.
/// Delta pages use the same round tags and nothing else: a delta names the round of the copy it was encoded against,
/// and is decoded in place onto the page only if that is exactly the copy held (received earlier in this migration,
/// whole or as a delta). A delta for a page never received, against another copy, or that does not decode to one page
/// fails the migration, and nothing of its batch is written (<see cref="CheckDeltas"/>).
/// </remarks>
internal sealed class IncomingMigration : IDisposable
{
    private const int StripeCount = 1024;

    // Tables with an entry per page, outside the GC heap (ZeroedArray): made in no time at Begin whatever the guest's
    // size, backed by the host only where pages arrive. Read and written under _ramGuard's read side, freed under its
    // write side.
    private readonly ZeroedArray<uint> _pageRound; // round + 1 of the copy held; 0 = never written (still zero)

    // The digest of each page as last written (PageDigests.Hash), taken while the page is hot in cache, so switchover
    // compares instead of rehashing every in-use page inside the downtime. _digestKnown[p] = 0: hash at switchover
    // (never written, or written as zero, which is rarely in use). Only the apply path writes RAM before the VM exists.
    private readonly ZeroedArray<ulong> _digests;
    private readonly ZeroedArray<byte> _digestKnown;
    private readonly Lazy<Shared.Guest.Kernel.DescriptorSnapshot> _allocator;
    private readonly object[] _stripes;
    private long _batches;
    private long _pagesReceived;
    private long _pagesApplied;
    private long _bytesReceived;
    private long _pagesDelta;
    private int _openStreams;
    private int _maxRound;
    private GuestRam? _ram;

    // Streams apply under the read side; discarding or handing over RAM takes the write side, so native memory is
    // never unmapped under a copy in flight.
    private readonly ReaderWriterLockSlim _ramGuard = new(LockRecursionPolicy.NoRecursion);

    private readonly TimeProvider _time;
    private readonly TargetMetrics? _metrics;
    private long _lastActivity;
    private readonly object _probeGate = new();
    private readonly ManualResetEventSlim _probeSettled = new();
    private bool _probeClosed;
    private bool _disposed;

    /// <summary>Takes ownership of <paramref name="ram"/>: fresh (all zero) RAM of the configuration's size.</summary>
    /// <param name="configJson">The guest configuration exactly as it arrived (the state digest covers it).</param>
    /// <param name="owner">Who began it: only the same caller (key, client certificate) may act on it later.</param>
    public IncomingMigration(string id, GuestConfig config, string configJson, MigrationOwner owner, GuestRam ram,
        TimeProvider time, TargetMetrics? metrics = null)
    {
        _metrics = metrics;
        ArgumentNullException.ThrowIfNull(ram);
        ArgumentNullException.ThrowIfNull(time);
        Id = id;
        Config = config;
        ConfigJson = configJson;
        Owner = owner;
        _time = time;
        _lastActivity = time.GetTimestamp();
        _ram = ram;
        _pageRound = ZeroedArray<uint>.Allocate(ram.PageCount);
        _digests = ZeroedArray<ulong>.Allocate(ram.PageCount);
        _digestKnown = ZeroedArray<byte>.Allocate(ram.PageCount);
        long pages = ram.PageCount;
        _allocator = new(() => Shared.Guest.Kernel.DescriptorSnapshot.Allocate(pages));
        _stripes = new object[StripeCount];
        for (int i = 0; i < StripeCount; i++)
        {
            _stripes[i] = new object();
        }
    }

    public string Id { get; }

    public GuestConfig Config { get; }

    public string ConfigJson { get; }

    /// <summary>The wire version the source declared at Begin (ProtocolVersions): how its completion is read.</summary>
    public uint ProtocolVersion { get; init; } = ProtocolVersions.Current;

    /// <summary>The source offered delta pages at Begin (and this target took them): it may send deltas.</summary>
    public bool DeltaPages { get; init; }

    /// <summary>Pages received as a delta and decoded onto their base.</summary>
    public long PagesDelta => Interlocked.Read(ref _pagesDelta);

    public MigrationOwner Owner { get; }

    /// <summary>
    /// What rehearsals rebuild to measure this target's side of the switchover (<see cref="RestoreProbe"/>); null
    /// before <see cref="UseProbe"/>, when this guest's shape has no scratch twin, and once the switchover began.
    /// </summary>
    public RestoreProbe? Probe { get; private set; }

    /// <summary>
    /// Room for the guest's descriptor array, which a resume-first switchover fills before the guest runs
    /// (<see cref="Shared.Guest.Kernel.GuestKernel.SnapshotDescriptors"/>): 16 bytes a page, made and touched beside
    /// Begin (<see cref="PrepareAllocator"/>), not in it; a caller that comes first makes it, and one that comes
    /// meanwhile waits for it.
    /// </summary>
    public Shared.Guest.Kernel.DescriptorSnapshot Allocator => _allocator.Value;

    /// <summary>Makes and touches <see cref="Allocator"/> now (beside Begin, off its reply's path).</summary>
    public void PrepareAllocator() => _ = _allocator.Value;

    /// <summary>
    /// For a rehearsal: copies as many bytes as the guest's descriptor array holds out of the RAM received so far into
    /// <see cref="Allocator"/>, as a resume-first switchover does before the guest runs; returns what that took (ms).
    /// </summary>
    public double TimeDescriptorCopy()
    {
        var allocator = Allocator; // made beside Begin; a real switchover finds it made
        _ramGuard.EnterReadLock();
        try
        {
            if (_ram is not { } ram)
            {
                return 0;
            }

            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            allocator.CopyFrom(ram, 0);
            return System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        finally
        {
            _ramGuard.ExitReadLock();
        }
    }

    /// <summary>
    /// Takes ownership of the probe rehearsals will use (prepared beside Begin, so it may come after the switchover
    /// began or the migration ended: then it goes at once).
    /// </summary>
    public void UseProbe(RestoreProbe? probe)
    {
        lock (_probeGate)
        {
            if (!_probeClosed)
            {
                Probe = probe;
                _probeSettled.Set();
                return;
            }
        }

        probe?.Dispose();
    }

    /// <summary>
    /// For a rehearsal: waits (up to <paramref name="timeout"/>) until the probe prepared beside Begin is in place or
    /// known to be missing, so a rehearsal that comes early measures the rebuild late rather than not at all.
    /// </summary>
    public RestoreProbe? AwaitProbe(TimeSpan timeout)
    {
        _ = _probeSettled.Wait(timeout);
        return Probe;
    }

    /// <summary>The switchover began: the probe is the caller's to dispose (once the reply is out).</summary>
    public RestoreProbe? TakeProbe()
    {
        lock (_probeGate)
        {
            _probeClosed = true;
            _probeSettled.Set();
            var probe = Probe;
            Probe = null;
            return probe;
        }
    }

    /// <summary>The migration ended: the scratch guest's RAM goes.</summary>
    public void DisposeProbe() => TakeProbe()?.Dispose();

    /// <summary>How long since the source last did anything for this migration (a call, a batch, a stream).</summary>
    public TimeSpan Idle => _time.GetElapsedTime(Interlocked.Read(ref _lastActivity));

    /// <summary>The source did something for this migration: its lease starts again.</summary>
    public void Touch() => Interlocked.Exchange(ref _lastActivity, _time.GetTimestamp());

    /// <summary>This process's CPU time when the migration began (its report counts the migration's share).</summary>
    public ProcessMark CpuAtStart { get; } = ProcessStats.Now();

    public long PagesReceived => Interlocked.Read(ref _pagesReceived);

    public long PagesApplied => Interlocked.Read(ref _pagesApplied);

    public long BytesReceived => Interlocked.Read(ref _bytesReceived);

    public int MaxRound => Volatile.Read(ref _maxRound);

    public int OpenStreams => Volatile.Read(ref _openStreams);

    /// <summary>The received RAM; null once handed to a VM or discarded.</summary>
    public GuestRam Ram => _ram ?? throw new ObjectDisposedException(nameof(IncomingMigration),
        "The migration's RAM was handed over or discarded.");

    public void StreamOpened()
    {
        Interlocked.Increment(ref _openStreams);
        Touch();
    }

    public void StreamClosed()
    {
        Interlocked.Decrement(ref _openStreams);
        Touch();
    }

    /// <summary>
    /// Validates a batch as a whole, then applies its pages. Throws <see cref="RpcException"/> with
    /// <see cref="StatusCode.InvalidArgument"/> naming the problem; nothing is applied from a batch whose framing is
    /// wrong.
    /// </summary>
    public (long Pages, long Applied) Apply(ReceivedBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        _ramGuard.EnterReadLock();
        try
        {
            var ram = _ram ?? throw RpcErrors.FailedPrecondition($"migration {Id} was discarded");
            return ApplyTo(ram, batch);
        }
        finally
        {
            _ramGuard.ExitReadLock();
        }
    }

    private (long Pages, long Applied) ApplyTo(GuestRam ram, ReceivedBatch batch)
    {
        int n = batch.Count;
        ReadOnlySpan<ulong> pfns = batch.Pfns;
        ReadOnlySpan<byte> kinds = batch.Kinds;
        ReadOnlySpan<uint> lengths = batch.Lengths;
        long total = 0;
        for (int i = 0; i < n; i++)
        {
            ulong pfn = pfns[i];
            if (pfn >= (ulong)ram.PageCount)
            {
                throw RpcErrors.InvalidArgument($"page {pfn} is outside guest RAM ({ram.PageCount} pages)");
            }

            if (lengths[i] > PageCodec.MaxEncodedLength)
            {
                throw RpcErrors.InvalidArgument($"page {pfn} claims a {lengths[i]}-byte payload");
            }

            total += lengths[i];
        }

        if (total != batch.PayloadLength)
        {
            throw RpcErrors.InvalidArgument(
                $"page lengths add up to {total} bytes, the payload has {batch.PayloadLength}");
        }

        uint tag = batch.Round + 1;
        Span<byte> scratch = stackalloc byte[PageCodec.MaxEncodedLength];
        Span<uint> pageRound = _pageRound.Span;
        Span<ulong> digests = _digests.Span;
        Span<byte> digestKnown = _digestKnown.Span;
        if (kinds.Contains((byte)PageEncodingKind.Delta))
        {
            CheckDeltas(batch, scratch); // before anything of the batch is written
        }

        var payload = new PagePayloadReader(batch.Payload, scratch);
        long applied = 0;
        long deltas = 0;
        for (int i = 0; i < n; i++)
        {
            int pfn = (int)pfns[i]; // checked above: a page of RAM, and RAM has at most Array.MaxLength pages
            var kind = (PageEncodingKind)kinds[i];
            ReadOnlySpan<byte> data = payload.Next((int)lengths[i]);
            lock (_stripes[pfn & (StripeCount - 1)])
            {
                uint held = pageRound[pfn];
                if (tag < held)
                {
                    continue; // an older copy arriving late on another channel (R11)
                }

                if (kind == PageEncodingKind.Delta)
                {
                    // Checked before the batch was applied; checked again here, under the lock, in case another
                    // stream wrote the page since (no correct source does: a page's deltas follow its base on one
                    // channel).
                    _ = DeltaPayload.Read(data, out uint baseRound, out int runs);
                    if (BaseProblem(pfn, baseRound, held) is { } problem)
                    {
                        throw RpcErrors.InvalidArgument(problem);
                    }

                    var page = ram.Page(pfn);
                    if (Xbzrle.Apply(data[runs..], page) is { } bad)
                    {
                        throw RpcErrors.InvalidArgument($"delta for page {pfn} does not decode to one page: {bad}");
                    }

                    digests[pfn] = PageDigests.Hash(page, pfn);
                    digestKnown[pfn] = 1;
                    deltas++;
                }
                else if (kind == PageEncodingKind.Zero && held == 0)
                {
                    // Fresh RAM already reads as zero; not touching it keeps untouched guest memory unallocated.
                    if (!data.IsEmpty)
                    {
                        throw RpcErrors.InvalidArgument($"page {pfn}: zero page carries {data.Length} payload bytes");
                    }
                }
                else
                {
                    var page = ram.Page(pfn);
                    if (PageCodec.Decode(kind, data, page) is { } error)
                    {
                        throw RpcErrors.InvalidArgument($"page {pfn}: {error}");
                    }

                    if (kind != PageEncodingKind.Zero)
                    {
                        digests[pfn] = PageDigests.Hash(page, pfn);
                        digestKnown[pfn] = 1;
                    }
                    else
                    {
                        digestKnown[pfn] = 0;
                    }
                }

                pageRound[pfn] = tag;
                applied++;
            }
        }

        Touch();
        Interlocked.Increment(ref _batches);
        Interlocked.Add(ref _pagesReceived, n);
        Interlocked.Add(ref _pagesApplied, applied);
        Interlocked.Add(ref _pagesDelta, deltas);
        Interlocked.Add(ref _bytesReceived, batch.PayloadLength);
        _metrics?.PagesReceived.Add(n);
        _metrics?.BytesReceived.Add(batch.PayloadLength);
        int round = (int)batch.Round;
        int seen;
        while (round > (seen = Volatile.Read(ref _maxRound))
            && Interlocked.CompareExchange(ref _maxRound, round, seen) != seen)
        {
        }

        return (n, applied);
    }

    /// <summary>
    /// Checks every delta of <paramref name="batch"/> before any of its pages is written: that this migration offered
    /// deltas, that each reads (its base round, then runs that decode to one page), names an older round than its own,
    /// and applies to the copy held now, unless a newer copy already superseded it (then it is dropped, R11). Throws
    /// an InvalidArgument <see cref="RpcException"/> naming the page.
    /// </summary>
    private void CheckDeltas(ReceivedBatch batch, Span<byte> scratch)
    {
        ReadOnlySpan<ulong> pfns = batch.Pfns;
        ReadOnlySpan<byte> kinds = batch.Kinds;
        ReadOnlySpan<uint> lengths = batch.Lengths;
        uint tag = batch.Round + 1;
        var payload = new PagePayloadReader(batch.Payload, scratch);
        ReadOnlySpan<uint> pageRound = _pageRound.Span;
        for (int i = 0; i < batch.Count; i++)
        {
            if (kinds[i] != (byte)PageEncodingKind.Delta)
            {
                payload.Skip((int)lengths[i]);
                continue;
            }

            int pfn = (int)pfns[i];
            if (!DeltaPages)
            {
                throw RpcErrors.InvalidArgument(
                    $"page {pfn} is a delta, but this migration did not offer delta pages at Begin");
            }

            ReadOnlySpan<byte> data = payload.Next((int)lengths[i]);
            if (DeltaPayload.Read(data, out uint baseRound, out int runs) is { } unreadable)
            {
                throw RpcErrors.InvalidArgument($"delta for page {pfn}: {unreadable}");
            }

            if (baseRound >= batch.Round)
            {
                throw RpcErrors.InvalidArgument($"delta for page {pfn} names round {baseRound} as its base, " +
                    $"which is not older than its own round {batch.Round}");
            }

            if (Xbzrle.Validate(data[runs..], PageGeometry.PageSize) is { } bad)
            {
                throw RpcErrors.InvalidArgument($"delta for page {pfn} does not decode to one page: {bad}");
            }

            uint held;
            lock (_stripes[pfn & (StripeCount - 1)])
            {
                held = pageRound[pfn];
            }

            if (tag >= held && BaseProblem(pfn, baseRound, held) is { } problem)
            {
                throw RpcErrors.InvalidArgument(problem);
            }
        }
    }

    /// <summary>
    /// Why a delta against the copy of <paramref name="baseRound"/> cannot apply to the copy held; null if it can.
    /// </summary>
    private static string? BaseProblem(long pfn, uint baseRound, uint held) =>
        held == 0
            ? $"delta for page {pfn}, which this target has not received"
            : held != baseRound + 1
                ? $"delta for page {pfn} against its round-{baseRound} copy, but this target holds " +
                    $"the copy of round {held - 1}"
                : null;

    /// <summary>
    /// The digest list of the received guest (<see cref="PageDigests"/>): digests taken as pages were written, the rest
    /// hashed now. Call after the streams closed, with the RAM handed to the VM and its free-page map.
    /// </summary>
    public ulong[] Digests(GuestRam ram, PageBitmap free) =>
        WithTables(() => PageDigests.Compute(ram, free, _digests.Span, _digestKnown.Span));

    /// <summary>
    /// The digest list built from receive-time digests alone, for a guest already running: a page never written
    /// (or written as zero) is zero here, so its digest is the zero page's. Reads no guest RAM.
    /// </summary>
    public ulong[] ReceivedDigests(PageBitmap free) =>
        WithTables(() => PageDigests.FromReceived(free, _digests.Span, _digestKnown.Span));

    /// <summary>
    /// For a switch to postcopy: the pages the source never sends (P2), which no batch of this migration carried and
    /// which are not in <paramref name="fetch"/>, the pages the source still sends. The source skipped them (free by a
    /// hint, ballooned, or discarded by reporting) since its first round and no write put them back; a fault on one is
    /// resolved here with the guest's poison value, never from the source (P3). A page carried once, as data or as
    /// zero, holds what the source's final sync found current, whatever its kind.
    /// </summary>
    /// <remarks>
    /// Sound only once every batch the source sent before the switch has been applied: a page already taken for a
    /// batch still in flight on another channel is neither carried yet nor in the fetch map, and would be taken for
    /// never sent. The switch must therefore carry how many pages the source put in batches, and wait until this
    /// target has received as many, before calling this.
    /// </remarks>
    public PageBitmap NeverSent(PageBitmap fetch)
    {
        ArgumentNullException.ThrowIfNull(fetch);
        if (fetch.PageCount != _pageRound.Length)
        {
            throw new ArgumentException($"a map of {fetch.PageCount} pages for a guest of {_pageRound.Length}",
                nameof(fetch));
        }

        return WithTables(() =>
        {
            ReadOnlySpan<uint> round = _pageRound.Span;
            var never = new PageBitmap(round.Length);
            for (int p = 0; p < round.Length; p++)
            {
                if (round[p] == 0 && !fetch.Get(p))
                {
                    never.Set(p);
                }
            }

            return never;
        });
    }

    /// <summary>Reads the per-page tables under the guard that keeps <see cref="Dispose"/> from freeing them.</summary>
    private T WithTables<T>(Func<T> read)
    {
        _ramGuard.EnterReadLock();
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return read();
        }
        finally
        {
            _ramGuard.ExitReadLock();
        }
    }

    /// <summary>Gives the RAM to a VM (which then owns it).</summary>
    public GuestRam TakeRam()
    {
        _ramGuard.EnterWriteLock();
        try
        {
            var ram = Ram;
            _ram = null;
            return ram;
        }
        finally
        {
            _ramGuard.ExitWriteLock();
        }
    }

    /// <summary>
    /// Discards the partial guest (RAM a VM did not take) and the per-page tables, once no stream is copying into them;
    /// also how a decided migration lets its tables go. Idempotent.
    /// </summary>
    public void Dispose()
    {
        DisposeProbe();
        _ramGuard.EnterWriteLock();
        try
        {
            _ram?.Dispose();
            _ram = null;
            if (!_disposed)
            {
                _disposed = true;
                _pageRound.Dispose();
                _digests.Dispose();
                _digestKnown.Dispose();
            }
        }
        finally
        {
            _ramGuard.ExitWriteLock();
        }
    }
}
