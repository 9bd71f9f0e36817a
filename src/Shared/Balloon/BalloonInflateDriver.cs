using Migration.Shared.Concurrency;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Guest.Workloads;

namespace Migration.Shared.Balloon;

/// <summary>
/// The guest's virtio-balloon driver, inflate and deflate part (Linux's <c>update_balloon_size_func</c> in shape): when
/// the config generation moves it works towards <c>num_pages</c> one request at a time, then rests until the next
/// change. Inflating takes blocks from the in-RAM buddy allocator (owner <see cref="PageOwner.BalloonInflated"/>), the
/// largest orders that fit, and hands them to the device in the negotiated encoding; deflating returns the newest
/// acknowledged blocks.
/// </summary>
/// <remarks>
/// <para>The ordering rules (B1, B2; the device keeps B3-B5): pages of an inflate become the balloon's, and count in
/// <c>actual</c>, only once the device has used the buffer, and only such pages are ever deflated; the driver touches
/// none of them while they are in the balloon. With MUST_TELL_HOST a deflated page is reused only after the device
/// used the deflate buffer; without it, as soon as the buffer is queued (the spec allows it).</para>
/// <para>An allocation failure logs "out of puff", waits 200 ms and retries, as Linux does; with the events queue it
/// tells the host once per stall (PUFF_FAILURE). Deflate-on-OOM: the kernel's OOM notifier takes 256 pages (1 MiB)
/// back per call and never re-inflates by itself; pressure the kernel reports goes to the host as PRESSURE events,
/// on a change of level.</para>
/// <para>A restored guest finds its balloon pages in its descriptors; no driver state travels with the VM.</para>
/// </remarks>
public sealed class BalloonInflateDriver
{
    /// <summary>Linux's VIRTIO_BALLOON_OOM_NR_PAGES: 256 pages (1 MiB) per OOM notification.</summary>
    public const int OomDeflatePages = 256;

    /// <summary>Pages per bitmap or chunk request at most (1 GiB), so one request never stalls the driver long.</summary>
    public const long MaxPagesPerRequest = 1L << 18;

    /// <summary>Linux retries a failed inflate after 200 ms.</summary>
    public static readonly TimeSpan PuffRetry = TimeSpan.FromMilliseconds(200);

    /// <summary>How long one step waits for the device's acknowledgement (short, so a pause is never held up).</summary>
    private static readonly TimeSpan AckWait = TimeSpan.FromMilliseconds(20);

    /// <summary>Pressure events repeat at most this often while the level stays the same.</summary>
    private static readonly TimeSpan PressureRepeat = TimeSpan.FromSeconds(1);

    private readonly GuestKernel _kernel;
    private readonly BalloonDevice _device;
    private readonly TimeProvider _time;
    private readonly SchedulingPoints _scheduling;
    private readonly IBalloonDefences _defences;
    private readonly object _gate = new();
    private readonly List<Block> _inflated = []; // acknowledged blocks, newest last
    private Request? _inFlight;
    private int _seenGeneration;
    private volatile bool _working;
    private long _retryAt = long.MinValue;
    private bool _puffReported;
    private MemoryPressure _lastPressure;
    private long _lastPressureAt = long.MinValue;
    private long _oomDeflatedPages;
    private long _actual;
    private long _statsSeq = -1; // the stats buffer the device holds or has not taken yet (-1: none queued)
    private byte[]? _statsBuffer;

    // The driver's stats buffer lives in guest RAM, as Linux's vb->stats array does, so it migrates: a flag that one
    // is outstanding, its length, then its entries. A restored guest reads it back and knows it still waits.
    private const long StatsFlagAt = GuestKernel.HeaderSubsystemOffset;
    private const long StatsLengthAt = StatsFlagAt + 4;
    private const long StatsBufferAt = StatsFlagAt + 8;
    private const int StatsBufferCapacity = BalloonStats.Count * BalloonStats.EntryBytes;

    /// <summary>A buffer queued on another device (the source's): this one will never use it.</summary>
    private const long QueuedElsewhere = long.MaxValue;

    public BalloonInflateDriver(GuestKernel kernel, BalloonDevice device, TimeProvider? time = null)
        : this(kernel, device, time ?? TimeProvider.System, SchedulingPoints.None, StandardBalloonDefences.Instance)
    {
    }

    internal BalloonInflateDriver(GuestKernel kernel, BalloonDevice device, TimeProvider time,
        SchedulingPoints scheduling, IBalloonDefences defences)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(device);
        _kernel = kernel;
        _device = device;
        _time = time;
        _scheduling = scheduling;
        _defences = defences;
        Encoding = device.Encoding;
        MustTellHost = BalloonFeatureBits.Has(device.Features, BalloonFeatureBits.MustTellHost);
        DeflateOnOom = BalloonFeatureBits.Has(device.Features, BalloonFeatureBits.DeflateOnOom);
        Events = BalloonFeatureBits.Has(device.Features, BalloonFeatureBits.EventsQueue);
        Stats = BalloonFeatureBits.Has(device.Features, BalloonFeatureBits.StatsQueue);
        foreach (var (pfn, order) in kernel.BlocksWithOrderOwnedBy(PageOwner.BalloonInflated))
        {
            _inflated.Add(new Block(pfn, order)); // a restored guest: its balloon is in its descriptors
            _actual += 1L << order;
        }

        _seenGeneration = device.ConfigGeneration;
        if (Stats && kernel.Memory.ReadByte(StatsFlagAt) != 0)
        {
            // a restored guest: it had queued this buffer with the source's device and still waits for its use
            int length = (int)Math.Min(kernel.Memory.ReadUInt32(StatsLengthAt), StatsBufferCapacity);
            _statsBuffer = kernel.Memory.ReadPage(0).Slice((int)StatsBufferAt, length).ToArray(); // the header page

            _statsSeq = QueuedElsewhere;
        }

        if (DeflateOnOom)
        {
            kernel.OomNotifier = OnOom;
        }

        if (Events)
        {
            kernel.Pressure = OnPressure;
        }
    }

    public BalloonEncoding Encoding { get; }

    /// <summary>
    /// A restored guest, once the device has its migrated state: the blocks the descriptors name of which the device
    /// holds nothing were a request in flight at the switchover that the device has used since (a MUST_TELL_HOST
    /// deflate, or an inflate it refused), so they go back to the allocator (a block partly held stays: the guest
    /// never touches what may be discarded); then <c>actual</c> is written again, since an inflate acknowledged
    /// after the source saved <c>actual</c> counts now.
    /// </summary>
    public void ReconcileWithDevice()
    {
        List<Block> gone;
        using (_scheduling.Lock(_gate))
        {
            gone = [.. _inflated.Where(b => _device.HeldIn(b.Pfn, b.Pages) == 0)];
            _inflated.RemoveAll(gone.Contains);
            _actual = _inflated.Sum(b => b.Pages);
        }

        FreeBlocks(gone);
        _seenGeneration = _device.ConfigGeneration;
        PublishActual();
        if (_defences.RequeueStatsOnRestore)
        {
            RequeueStats();
        }
    }

    /// <summary>
    /// The stats buffer in flight at the switchover was the source device's to answer; this device never saw it. The
    /// driver queues it again (QEMU rewinds the stats queue by one on the target for the same reason): without this
    /// the guest waits for an answer that never comes, and statistics stop for good after a migration.
    /// </summary>
    private void RequeueStats()
    {
        if (Stats && _statsBuffer is { } buffer)
        {
            _statsSeq = _device.Kick(BalloonVq.Stats, buffer);
        }
    }

    /// <summary>
    /// Keeps one stats buffer with the device (Linux's stats_handle_request): the first at the first step, a fresh
    /// one each time the device used the last (its request for new numbers).
    /// </summary>
    private void TendStats()
    {
        if (!Stats || _statsSeq == QueuedElsewhere || (_statsSeq >= 0 && !_device.IsUsed(_statsSeq)))
        {
            return;
        }

        _statsBuffer = BalloonStats.FromKernel(_kernel.Counters(), inflatedLeaveTotal: DeflateOnOom);
        _kernel.Memory.Write(StatsBufferAt, _statsBuffer);
        _kernel.Memory.WriteUInt32(StatsLengthAt, (uint)_statsBuffer.Length);
        _kernel.Memory.WriteByte(StatsFlagAt, 1);
        _statsSeq = _device.Kick(BalloonVq.Stats, _statsBuffer); // -1 (refused): tried again next step
    }

    public bool MustTellHost { get; }

    public bool DeflateOnOom { get; }

    public bool Events { get; }

    /// <summary>The statistics queue was negotiated: the driver keeps one stats buffer with the device.</summary>
    public bool Stats { get; }

    /// <summary>Pages in the balloon as the driver counts them (what it writes to <c>actual</c>).</summary>
    public long ActualPages
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return _actual;
            }
        }
    }

    /// <summary>Times an inflate could not allocate a page ("out of puff").</summary>
    public long PuffFailures { get; private set; }

    /// <summary>Pages given back under memory pressure (deflate-on-OOM).</summary>
    public long OomDeflatedPages => Interlocked.Read(ref _oomDeflatedPages);

    /// <summary>
    /// How long the driver's thread may sleep after an idle step. With a request in flight or a stats buffer the
    /// device refused, it polls each millisecond; working towards a target it could not reach ("out of puff"), it
    /// sleeps until the retry is due (under the system clock; a test's clock moves only when the test says);
    /// otherwise only the device gives it work (a new target, the stats buffer given back, a buffer used), and the
    /// device's interrupt wakes it, so up to 1 s.
    /// </summary>
    public TimeSpan IdleFor()
    {
        bool inFlight;
        using (_scheduling.Lock(_gate))
        {
            inFlight = _inFlight is not null;
        }

        if (inFlight || (Stats && _statsSeq < 0))
        {
            return GuestThread.Poll;
        }

        if (!_working)
        {
            return GuestThread.LongestSleep;
        }

        long now = _time.GetTimestamp();
        return _time == TimeProvider.System && now < _retryAt
            ? GuestThread.Sleep(_time.GetElapsedTime(now, _retryAt))
            : GuestThread.Poll;
    }

    /// <summary>One step of the driver's work item. Idle when it is at the target or waiting.</summary>
    public StepResult Step()
    {
        TendStats();
        if (FinishInFlight() is { } finished)
        {
            return finished;
        }

        int generation = _device.ConfigGeneration;
        if (generation != _seenGeneration)
        {
            _seenGeneration = generation;
            _working = true;
            _retryAt = long.MinValue;
            _puffReported = false;
        }

        if (!_working)
        {
            return StepResult.Idle;
        }

        long diff = _device.TargetPages - ActualPages;
        if (diff == 0)
        {
            _working = false;
            return StepResult.Idle;
        }

        return diff > 0 ? Inflate(diff) : Deflate(-diff, oom: false) > 0 ? StepResult.Progress : StepResult.Idle;
    }

    /// <summary>The request in flight, if any: done once the device used it. Null when none is in flight.</summary>
    private StepResult? FinishInFlight()
    {
        if (_inFlight is not { } request)
        {
            return null;
        }

        if (!_device.WaitUsed(request.Seq, AckWait))
        {
            if (request.Inflate)
            {
                _defences.Unused(new InflateHandle(this, request),
                    _device.TargetPages < ActualPages + request.Pages);
            }

            return _inFlight is null ? StepResult.Progress : StepResult.Idle;
        }

        if (request.Inflate)
        {
            Acknowledge(request);
        }
        else
        {
            _inFlight = null;
            FreeBlocks(request.Blocks); // MUST_TELL_HOST: reused only now
            AfterDeflate(request.Pages);
        }

        return StepResult.Progress;
    }

    private StepResult Inflate(long wanted)
    {
        if (_time.GetTimestamp() < _retryAt || _device.FreeSlots(BalloonVq.Inflate) == 0)
        {
            return StepResult.Idle;
        }

        long cap = Encoding == BalloonEncoding.PageNumbers ? BalloonWire.MaxPageNumbers : MaxPagesPerRequest;
        var blocks = new List<Block>();
        var ranges = new List<PageRange>();
        long pages = 0;
        long lo = long.MaxValue;
        long hi = long.MinValue;
        int order = GuestKernel.MaxOrder;
        while (pages < Math.Min(wanted, cap))
        {
            long left = Math.Min(wanted, cap) - pages;
            order = Math.Min(order, 63 - (int)ulong.LeadingZeroCount((ulong)left));
            long pfn = _kernel.TryAllocate(order, PageOwner.BalloonInflated);
            if (pfn < 0)
            {
                if (order == 0)
                {
                    break;
                }

                order--;
                continue;
            }

            var block = new Block(pfn, order);
            long newLo = Math.Min(lo, pfn);
            long newHi = Math.Max(hi, block.End);
            if (!BalloonWire.Fits(Encoding, pages + block.Pages, ranges.Count + 1, newHi - (newLo & ~63L)))
            {
                _kernel.Free(pfn, order);
                break;
            }

            blocks.Add(block);
            ranges.Add(new PageRange(pfn, block.Pages));
            pages += block.Pages;
            (lo, hi) = (newLo, newHi);
        }

        if (blocks.Count == 0)
        {
            OutOfPuff();
            return StepResult.Idle;
        }

        _ = PageRange.SortAndMerge(ranges);
        long seq = _device.Kick(BalloonVq.Inflate, BalloonWire.Encode(Encoding, ranges, BalloonVq.Inflate));
        var request = new Request(Inflate: true, blocks, pages, seq);
        _inFlight = request;
        if (seq < 0)
        {
            Abandon(request);
            return StepResult.Idle;
        }

        _defences.Queued(new InflateHandle(this, request));
        return StepResult.Progress;
    }

    /// <summary>Linux: "Out of puff! Can't get N pages", then retry in 200 ms. Tells the host once per stall.</summary>
    private void OutOfPuff()
    {
        PuffFailures++;
        _retryAt = _time.GetTimestamp() + (long)(PuffRetry.TotalSeconds * _time.TimestampFrequency);
        if (Events && !_puffReported && _device.FreeSlots(BalloonVq.Events) > 0)
        {
            _puffReported = true;
            _device.Kick(BalloonVq.Events, BalloonEventWire.Encode(BalloonGuestEvent.PuffFailure, 0));
        }
    }

    /// <summary>Queues one deflate of up to <paramref name="wanted"/> pages; returns how many went (0: none could).</summary>
    private long Deflate(long wanted, bool oom)
    {
        if (_device.FreeSlots(BalloonVq.Deflate) == 0)
        {
            return 0;
        }

        long cap = Encoding == BalloonEncoding.PageNumbers ? BalloonWire.MaxPageNumbers : MaxPagesPerRequest;
        var blocks = TakeNewest(Math.Min(wanted, cap));
        if (blocks.Count == 0)
        {
            return 0;
        }

        long pages = blocks.Sum(b => b.Pages);
        var ranges = blocks.Select(b => new PageRange(b.Pfn, b.Pages)).ToList();
        _ = PageRange.SortAndMerge(ranges);
        long seq = _device.Kick(BalloonVq.Deflate, BalloonWire.Encode(Encoding, ranges, BalloonVq.Deflate));
        if (seq < 0)
        {
            Return(blocks);
            return 0;
        }

        if (MustTellHost)
        {
            if (oom)
            {
                _scheduling.WaitUntil(() => _device.IsUsed(seq)); // Linux's tell_host waits in the OOM path too
                FreeBlocks(blocks);
                AfterDeflate(pages);
            }
            else
            {
                _inFlight = new Request(Inflate: false, blocks, pages, seq);
            }

            return pages;
        }

        FreeBlocks(blocks); // without MUST_TELL_HOST the pages are the guest's once the buffer is queued
        AfterDeflate(pages);
        return pages;
    }

    /// <summary>
    /// Writes <c>actual</c> to the config space. The driver thread and a vCPU in the OOM path both change it; each
    /// writes again until what it wrote is still current, so a stale value never lands last.
    /// </summary>
    private void PublishActual()
    {
        long written;
        do
        {
            written = ActualPages;
            _device.WriteActual(written);
        }
        while (written != ActualPages);
    }

    private void AfterDeflate(long pages)
    {
        using (_scheduling.Lock(_gate))
        {
            _actual -= pages;
        }

        PublishActual();
    }

    /// <summary>
    /// Takes up to <paramref name="pages"/> pages of the newest acknowledged blocks, splitting the last one so exactly
    /// that many go (the rest stays in the balloon), and no more than one buffer of the encoding carries (chunk count,
    /// bitmap span).
    /// </summary>
    private List<Block> TakeNewest(long pages)
    {
        var taken = new List<Block>();
        using (_scheduling.Lock(_gate))
        {
            long left = pages;
            long lo = long.MaxValue;
            long hi = long.MinValue;
            while (left > 0 && _inflated.Count > 0)
            {
                var b = _inflated[^1];
                long newLo = Math.Min(lo, b.Pfn);
                long newHi = Math.Max(hi, b.End);
                if (taken.Count > 0
                    && !BalloonWire.Fits(Encoding, pages - left + Math.Min(b.Pages, left), taken.Count + 1,
                        newHi - (newLo & ~63L)))
                {
                    break;
                }

                (lo, hi) = (newLo, newHi);
                if (b.Pages <= left)
                {
                    _inflated.RemoveAt(_inflated.Count - 1);
                    taken.Add(b);
                    left -= b.Pages;
                    continue;
                }

                // Split: the lower half stays in the balloon, the upper half is considered next.
                long upper = _kernel.SplitAllocated(b.Pfn, b.Order);
                _inflated[^1] = new Block(b.Pfn, b.Order - 1);
                _inflated.Add(new Block(upper, b.Order - 1));
            }
        }

        return taken;
    }

    private void Return(List<Block> blocks)
    {
        using (_scheduling.Lock(_gate))
        {
            _inflated.AddRange(blocks);
        }
    }

    private void FreeBlocks(List<Block> blocks)
    {
        foreach (var b in blocks)
        {
            _kernel.Free(b.Pfn, b.Order);
        }
    }

    /// <summary>
    /// The kernel's OOM notifier (deflate-on-OOM): 1 MiB of the balloon back, and a PRESSURE(critical) event. Never
    /// re-inflates: the driver inflates again only when the host changes the target.
    /// </summary>
    private bool OnOom(int order)
    {
        long pages = Deflate(Math.Max(OomDeflatePages, 1L << order), oom: true);
        if (pages == 0)
        {
            return false;
        }

        _working = false; // never re-inflate by itself: only a new target from the host restarts the work
        Interlocked.Add(ref _oomDeflatedPages, pages);
        return true;
    }

    /// <summary>A PRESSURE event when the level the kernel reports changes, or at most once a second while it lasts.</summary>
    private void OnPressure(MemoryPressure level)
    {
        long now = _time.GetTimestamp();
        using (_scheduling.Lock(_gate))
        {
            bool repeat = level == _lastPressure && _lastPressureAt != long.MinValue
                && _time.GetElapsedTime(_lastPressureAt, now) < PressureRepeat;
            if (repeat || level == MemoryPressure.None)
            {
                return;
            }

            _lastPressure = level;
            _lastPressureAt = now;
        }

        if (_device.FreeSlots(BalloonVq.Events) > 0)
        {
            _device.Kick(BalloonVq.Events, BalloonEventWire.Pressure(level));
        }
    }

    private readonly record struct Block(long Pfn, int Order)
    {
        public long Pages => 1L << Order;

        public long End => Pfn + Pages;
    }

    private sealed record Request(bool Inflate, List<Block> Blocks, long Pages, long Seq);

    /// <summary>The device used the inflate: its pages are the balloon's and count in <c>actual</c>.</summary>
    private void Acknowledge(Request request)
    {
        _inFlight = ReferenceEquals(_inFlight, request) ? null : _inFlight;
        using (_scheduling.Lock(_gate))
        {
            _inflated.AddRange(request.Blocks);
            _actual += request.Pages;
        }

        PublishActual();
    }

    /// <summary>The inflate will not be the balloon's: its pages go back to the allocator.</summary>
    private void Abandon(Request request)
    {
        _inFlight = ReferenceEquals(_inFlight, request) ? null : _inFlight;
        FreeBlocks(request.Blocks);
    }

    /// <summary>An inflate as the defences see it.</summary>
    private sealed class InflateHandle(BalloonInflateDriver driver, Request request) : IInflateRequest
    {
        public void Acknowledge() => driver.Acknowledge(request);

        public void Abandon() => driver.Abandon(request);
    }
}
