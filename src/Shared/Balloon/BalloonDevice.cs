using Migration.Shared.Concurrency;
using Migration.Shared.Devices;
using Migration.Shared.Diagnostics;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;

namespace Migration.Shared.Balloon;

/// <summary>
/// The host side of virtio-balloon inflate and deflate: the config space (<c>num_pages</c>, the host's target, and
/// <c>actual</c>, the guest's answer, in 4 KiB pages), the inflate, deflate and events queues, and the map of pages
/// the balloon holds. Inflated pages are discarded from guest RAM; deflated ones are handed back. It joins every
/// migration as a precopy participant: held pages are neither scanned nor sent, and travel as ranges.
/// </summary>
/// <remarks>
/// <para>Every buffer is checked against the negotiated encoding and guest RAM, and an inflate may only name pages
/// outside the balloon, a deflate only pages inside it. A bad buffer is a device error: recorded, reported and
/// notified, the request dropped (its buffer still used, so the driver is not wedged), nothing else changes.</para>
/// <para>One lock serialises the queues, the held map and the config space; discards happen under it, so a held page
/// is discarded before any migration step can see it held.</para>
/// </remarks>
public sealed class BalloonDevice : IPrecopyParticipant, IBalloonDeviceSteps
{
    /// <summary>Slots per virtqueue (QEMU's balloon queues have 128).</summary>
    public const int DefaultQueueCapacity = 128;

    private readonly object _gate = new();
    private readonly GuestRam _ram;
    private readonly SchedulingPoints _scheduling;
    private readonly IDeviceThreads _threads;
    private readonly IBalloonDefences _defences;
    private readonly BalloonMetrics _metrics = BalloonMetrics.Shared;
    private readonly Queue<(long Seq, byte[] Buffer)>[] _queues;
    private readonly PageBitmap _held;
    private readonly List<PageRange> _scratch = [];
    private readonly List<BalloonNotification> _pending = [];
    private long _nextSeq;
    private readonly HashSet<long> _usedOutOfOrder = [];
    private long _usedUpTo = -1;
    private int _queuedCount;
    private MigrationBitmap? _bitmap;
    private MigrationBitmap? _joining; // the bitmap of a migration being set up, while its defences run
    private bool _skipping; // this migration skips held pages (off: sent as zero pages, as QEMU does)
    private bool _pressureDuringMigration;
    private IDisposable? _thread;
    private MigrationCounters _migration;
    private readonly TimeProvider _time;
    private long _statsHeld = -1; // the guest's stats buffer the device keeps as its next request (-1: none)
    private GuestStats _guestStats = new();
    private ITimer? _statsTimer;
    private PageReportingHost? _reporting;
    private bool _skippingDiscarded;

    public BalloonDevice(GuestRam ram, ulong features)
        : this(ram, features, DefaultQueueCapacity, SchedulingPoints.None, DedicatedDeviceThreads.Instance,
            StandardBalloonDefences.Instance)
    {
    }

    internal BalloonDevice(GuestRam ram, ulong features, int queueCapacity, SchedulingPoints scheduling,
        IDeviceThreads threads, IBalloonDefences defences, TimeProvider? time = null)
    {
        _time = time ?? TimeProvider.System;
        ArgumentNullException.ThrowIfNull(ram);
        ArgumentOutOfRangeException.ThrowIfLessThan(queueCapacity, 1);
        _ram = ram;
        Features = features;
        Encoding = BalloonOptions.EncodingOf(features);
        QueueCapacity = queueCapacity;
        _scheduling = scheduling;
        _threads = threads;
        _defences = defences;
        _held = new PageBitmap(ram.PageCount);
        _queues = [.. Enum.GetValues<BalloonVq>().Select(_ => new Queue<(long, byte[])>())];
    }

    /// <summary>
    /// Told every page a reported block's discard zeroed, as a store is told to the race fuzzer's bookkeeping (a
    /// discard is the host storing zeros). Null in production.
    /// </summary>
    internal Action<long>? StoreObserver { get; init; }

    /// <summary>
    /// The device's interrupt to the guest: it used a buffer, gave the stats buffer back, or changed the config. The
    /// VM wakes its drivers' threads with it. Called under the device's lock, so it must only signal.
    /// </summary>
    internal Action? GuestNotify { get; init; }

    /// <summary>
    /// Sets up the reporting queue (VIRTIO_BALLOON_F_REPORTING negotiated): reports of blocks of at least
    /// <paramref name="minOrder"/>; <paramref name="freeInGuest"/> reads the guest's descriptors to check that a
    /// reported block is free there. The poison rule follows the negotiated PAGE_POISON and
    /// <paramref name="poisonVal"/>.
    /// </summary>
    public void EnableReporting(int minOrder, uint poisonVal, Func<long, int, bool> freeInGuest)
    {
        ArgumentNullException.ThrowIfNull(freeInGuest);
        if (!BalloonFeatureBits.Has(Features, BalloonFeatureBits.PageReporting))
        {
            throw new InvalidOperationException("free page reporting was not negotiated");
        }

        using (_scheduling.Lock(_gate))
        {
            _reporting = new PageReportingHost(_ram, minOrder,
                BalloonFeatureBits.Has(Features, BalloonFeatureBits.PagePoison), poisonVal, freeInGuest,
                _defences, _scheduling, StoreObserver);
        }
    }

    /// <summary>Free page reporting's totals, or null without reporting.</summary>
    public PageReportingStats? ReportingStats
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return _reporting is not { } r ? null : new PageReportingStats(r.Reports, r.BlocksReported,
                    r.PagesDiscarded, r.PagesKeptPoisoned, r.DiscardedPages);
            }
        }
    }

    /// <summary>The pages free page reporting discarded, as ranges (empty without reporting).</summary>
    public List<PageRange> DiscardedRanges()
    {
        using (_scheduling.Lock(_gate))
        {
            return _reporting?.Ranges() ?? [];
        }
    }

    /// <summary>A migrated device takes the source's discard map (see <see cref="PageReportingHost.Restore"/>).</summary>
    public void RestoreDiscarded(IReadOnlyList<PageRange> discarded)
    {
        ArgumentNullException.ThrowIfNull(discarded);
        using (_scheduling.Lock(_gate))
        {
            _reporting?.Restore(discarded);
        }
    }

    /// <summary>Negotiated feature bits; the queue layout and the encoding follow from them.</summary>
    public ulong Features { get; }

    public BalloonEncoding Encoding { get; }

    public int QueueCapacity { get; }

    public long RamPages => _ram.PageCount;

    /// <summary>
    /// Listeners (the management API's event stream). Raised outside the device lock, in order for each thread that
    /// raises them; across threads (the device thread, a vCPU, the host) they may interleave.
    /// </summary>
    public event Action<BalloonNotification>? Notified;

    /// <summary>Config <c>num_pages</c>: how many pages the host wants in the balloon.</summary>
    public long TargetPages { get; private set; }

    /// <summary>Config <c>actual</c>: how many pages the guest says the balloon holds.</summary>
    public long ActualPages { get; private set; }

    /// <summary>Bumped at every config change (the config-change interrupt); the driver acts when it moves.</summary>
    public int ConfigGeneration => Volatile.Read(ref _configGeneration);

    private int _configGeneration;

    /// <summary>Pages the device holds (inflated, not yet deflated).</summary>
    public long HeldPages
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return _held.Count;
            }
        }
    }

    /// <summary>Buffers waiting on any queue. Read without the lock (a scheduler polls it while actors hold it).</summary>
    public int Queued => Volatile.Read(ref _queuedCount);

    /// <summary>Totals since the device was created.</summary>
    public BalloonDeviceStats Stats
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return _stats with { HeldPages = _held.Count, TargetPages = TargetPages, ActualPages = ActualPages };
            }
        }
    }

    private BalloonDeviceStats _stats = new();

    // ---- host side (the management API) ------------------------------------------------------------------------

    /// <summary>Sets <c>num_pages</c>. Throws for a target below zero or above guest RAM.</summary>
    /// <exception cref="InvalidOperationException">
    /// The guest reported memory pressure during the running migration and the target would inflate further: the
    /// host does not fight the guest while it migrates.
    /// </exception>
    public void SetTargetPages(long pages)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(pages);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(pages, RamPages);
        using (_scheduling.Lock(_gate))
        {
            if (_bitmap is not null && _pressureDuringMigration && pages > ActualPages)
            {
                throw new InvalidOperationException(
                    "the guest reported memory pressure during this migration; the balloon will not inflate " +
                    "until the migration ends");
            }

            ChangeTargetLocked(pages);
        }

        RaisePending();
    }

    /// <summary>The held pages as sorted, disjoint ranges.</summary>
    public List<PageRange> HeldRanges()
    {
        using (_scheduling.Lock(_gate))
        {
            return HeldRangesLocked();
        }
    }

    /// <summary>
    /// A migrated device on the target: config and held ranges as the source saved them. The caller has checked the
    /// ranges against the guest's own descriptors; the pages are discarded here (the target never received them).
    /// </summary>
    public void Restore(long targetPages, long actualPages, IReadOnlyList<PageRange> held)
    {
        ArgumentNullException.ThrowIfNull(held);
        using (_scheduling.Lock(_gate))
        {
            TargetPages = targetPages;
            ActualPages = actualPages;
            foreach (var r in held)
            {
                _held.SetRange(r.First, r.Count);
                _ram.Discard(r.First, r.Count);
            }

            // No config interrupt: the guest saw this config on the source already. (Deflate-on-OOM's "never
            // re-inflate by itself" holds across a migration; a target the guest had not reached yet needs a new
            // SetBalloon here.)
        }
    }

    /// <summary>How many pages of [first, first+count) the balloon holds.</summary>
    public long HeldIn(long first, long count)
    {
        using (_scheduling.Lock(_gate))
        {
            return _held.CountRange(first, count);
        }
    }

    // ---- guest side ----------------------------------------------------------------------------------------------

    /// <summary>
    /// The driver adds a buffer to the queue at <paramref name="queueIndex"/> (the layout of
    /// <see cref="BalloonQueues"/>) and kicks. Returns its sequence number, or -1 for a queue that does not exist or
    /// is full: a device error (a driver that floods a queue or ignores the negotiated layout).
    /// </summary>
    public long Kick(int queueIndex, byte[] buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        long seq;
        using (_scheduling.Lock(_gate))
        {
            var queue = BalloonQueues.At(queueIndex, Features);
            if (queue is not { } q || q is BalloonVq.FreePage || (q is BalloonVq.Reporting && _reporting is null))
            {
                FailLocked($"a buffer on queue {queueIndex}, which is no inflate, deflate, stats, reporting or " +
                    $"events queue under features 0x{Features:x}");
                seq = -1;
            }
            else if (_queues[(int)q].Count >= QueueCapacity)
            {
                FailLocked($"{Name(q)} queue overflow: a buffer with all {QueueCapacity} slots in use");
                seq = -1;
            }
            else
            {
                seq = _nextSeq++;
                _queues[(int)q].Enqueue((seq, buffer));
                Volatile.Write(ref _queuedCount, _queuedCount + 1);
                Monitor.PulseAll(_gate);
            }
        }

        RaisePending();
        return seq;
    }

    /// <summary>Kicks the queue of role <paramref name="queue"/> under the negotiated layout.</summary>
    public long Kick(BalloonVq queue, byte[] buffer) => Kick(BalloonQueues.IndexOf(queue, Features), buffer);

    public int FreeSlots(BalloonVq queue)
    {
        using (_scheduling.Lock(_gate))
        {
            return QueueCapacity - _queues[(int)queue].Count;
        }
    }

    /// <summary>The latest statistics the guest reported (QEMU's <c>guest-stats</c>).</summary>
    public GuestStats GuestStats
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return _guestStats;
            }
        }
    }

    /// <summary>Whether the device holds the guest's stats buffer (a request can be made now).</summary>
    public bool HoldsStatsBuffer
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return _statsHeld >= 0;
            }
        }
    }

    /// <summary>
    /// Asks the guest for fresh statistics: gives back the buffer the device holds, which the driver refills and
    /// queues again. False when the device holds none (no stats queue, or the guest has not answered the last one).
    /// </summary>
    public bool RequestStats()
    {
        using (_scheduling.Lock(_gate))
        {
            if (_statsHeld < 0)
            {
                return false;
            }

            _statsHeld = -1;
            Monitor.PulseAll(_gate);
            GuestNotify?.Invoke();
            return true;
        }
    }

    /// <summary>
    /// Stops polling for good (the VM shuts down). Takes no lock: a shutdown must not wait for a guest thread that
    /// was stopped while it used the device.
    /// </summary>
    public void StopStatsPolling() => Interlocked.Exchange(ref _statsTimer, null)?.Dispose();

    /// <summary>
    /// Requests statistics every <paramref name="seconds"/> (QEMU's guest-stats-polling-interval); 0 stops.
    /// </summary>
    public void SetStatsPolling(int seconds)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(seconds);
        using (_scheduling.Lock(_gate))
        {
            StopStatsPolling();
            if (seconds > 0)
            {
                var period = TimeSpan.FromSeconds(seconds);
                _statsTimer = _time.CreateTimer(_ => RequestStats(), null, period, period);
            }

            _guestStats = _guestStats with { PollingIntervalSeconds = seconds };
        }
    }

    /// <summary>Whether the device has used (processed or dropped) the buffer with this sequence number.</summary>
    public bool IsUsed(long seq)
    {
        using (_scheduling.Lock(_gate))
        {
            // A stats buffer the device holds was taken off the queue but is not used until the next request.
            return (seq <= _usedUpTo || _usedOutOfOrder.Contains(seq)) && (_statsHeld < 0 || seq != _statsHeld);
        }
    }

    /// <summary>
    /// Waits up to <paramref name="timeout"/> for the buffer to be used (the used-buffer interrupt); under the race
    /// fuzzer the scheduler runs others instead of the clock. The deadline is the real clock's, not the device's
    /// <see cref="TimeProvider"/>: it bounds a monitor wait, which a test's clock cannot advance.
    /// </summary>
    public bool WaitUsed(long seq, TimeSpan timeout)
    {
        if (_scheduling.WaitPoint is not null)
        {
            return IsUsed(seq);
        }

        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        lock (_gate)
        {
            while (!(seq <= _usedUpTo || _usedOutOfOrder.Contains(seq)))
            {
                long left = deadline - Environment.TickCount64;
                if (left <= 0)
                {
                    return false;
                }

                Monitor.Wait(_gate, (int)left);
            }

            return true;
        }
    }

    /// <summary>The guest writes <c>actual</c> (a config-space write: no interrupt back).</summary>
    public void WriteActual(long pages)
    {
        using (_scheduling.Lock(_gate))
        {
            if (pages < 0 || pages > RamPages)
            {
                FailLocked($"the guest wrote actual = {pages} (0 to {RamPages} pages)");
            }
            else if (pages != ActualPages)
            {
                ActualPages = pages;
                _pending.Add(Notification(BalloonNotificationKind.ActualChanged));
            }
        }

        RaisePending();
    }

    // ---- device thread -------------------------------------------------------------------------------------------

    /// <summary>Starts the device thread (the VM started).</summary>
    public void Start() => _thread ??= _threads.Start("balloon device", Run);

    /// <summary>
    /// Stops the device thread (the VM shut down); what is queued stays queued. Takes no lock: the thread notices the
    /// cancellation within its 50 ms wait, and under the race fuzzer an actor parked inside the device may still hold
    /// the lock when a run is torn down.
    /// </summary>
    public void Stop()
    {
        _thread?.Dispose();
        _thread = null;
    }

    /// <summary>Uses the oldest buffer on any queue. Returns false when none is queued.</summary>
    public bool ProcessOne()
    {
        bool any;
        using (_scheduling.Lock(_gate))
        {
            any = ProcessOneLocked(null);
        }

        RaisePending();
        return any;
    }

    /// <summary>
    /// Uses the oldest buffer on <paramref name="queue"/>: virtqueues are independent, and a device may serve them in
    /// any order (the race fuzzer picks the order).
    /// </summary>
    public bool ProcessOne(BalloonVq queue)
    {
        bool any;
        using (_scheduling.Lock(_gate))
        {
            any = ProcessOneLocked(queue);
        }

        RaisePending();
        return any;
    }

    /// <summary>Uses every queued buffer.</summary>
    public void Drain()
    {
        using (_scheduling.Lock(_gate))
        {
            DrainLocked();
        }

        RaisePending();
    }

    private void Run(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            bool any;
            using (_scheduling.Lock(_gate))
            {
                any = ProcessOneLocked(null);
                if (!any)
                {
                    Monitor.Wait(_gate, 50);
                }
            }

            RaisePending();
        }
    }

    // ---- precopy participant ---------------------------------------------------------------------------------------

    /// <summary>
    /// Joins every migration (the balloon's pages are the device's, whatever the capabilities): uses what is queued,
    /// then clears the held pages from the bitmap, once (B3, B5), unless the migration sends them as zero pages
    /// (<see cref="MigrationCapabilities.SkipBallooned"/> off).
    /// </summary>
    public bool Setup(PrecopySetup setup)
    {
        ArgumentNullException.ThrowIfNull(setup);
        using (_scheduling.Lock(_gate))
        {
            // The defences skip into the joining bitmap; buffers they use meanwhile are not yet this migration's.
            _joining = setup.Bitmap;
            _skipping = setup.Capabilities.SkipBallooned;
            long skipped = _defences.AtSetup(this);
            _joining = null;
            _bitmap = setup.Bitmap;
            _migration = default;
            _pressureDuringMigration = false;
            _migration.Skipping = _skipping;
            _migration.PagesSkipped = skipped;
            _skippingDiscarded = setup.Capabilities.SkipDiscarded && _reporting is not null;
            _migration.SkippingDiscarded = _skippingDiscarded;
            if (_skippingDiscarded)
            {
                _migration.DiscardedSkipped = _reporting!.Skip(setup.Bitmap);
            }
        }

        RaisePending();
        return true;
    }

    public void BeforeSync(bool vmRunning)
    {
    }

    public void AfterSync(bool vmRunning)
    {
        using (_scheduling.Lock(_gate))
        {
            if (_bitmap is not null)
            {
                _defences.AfterSync(this);
            }
        }
    }

    /// <summary>
    /// The VM is paused and the last pages are out: uses every queued buffer (B4) so the held ranges saved next are
    /// exactly the pages the guest has left in the balloon.
    /// </summary>
    public void Complete()
    {
        using (_scheduling.Lock(_gate))
        {
            _defences.BeforeSave(this);
        }

        RaisePending();
    }

    public void Cleanup(MigrationStatus outcome)
    {
        using (_scheduling.Lock(_gate))
        {
            _bitmap = null;
            _pressureDuringMigration = false;
        }
    }

    public void Report(MigrationReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var stats = Stats;
        MigrationCounters m;
        using (_scheduling.Lock(_gate))
        {
            m = _migration;
        }

        report.Transfer.PagesSkippedAsBallooned = m.PagesSkipped;
        report.Transfer.PagesSkippedAsDiscarded = m.DiscardedSkipped;
        if (ReportingStats is { } r)
        {
            report.Reporting = new MigrationReport.ReportingSection
            {
                SkipsDiscarded = m.SkippingDiscarded,
                PagesSkipped = m.DiscardedSkipped,
                PagesDiscardedDuringMigration = m.DiscardedDuring,
                Reports = r.Reports,
                PagesDiscarded = r.PagesDiscarded,
                PagesKeptPoisoned = r.PagesKeptPoisoned,
                DiscardMapPages = r.DiscardMapPages,
            };
        }

        report.Balloon = new MigrationReport.BalloonSection
        {
            Encoding = Encoding.ToString(),
            SkipsBallooned = m.Skipping,
            Features = $"0x{Features:x}",
            TargetPages = stats.TargetPages,
            ActualPages = stats.ActualPages,
            HeldPages = stats.HeldPages,
            PagesSkipped = m.PagesSkipped,
            InflatedDuringMigration = m.Inflated,
            DeflatedDuringMigration = m.Deflated,
            GuestEvents = m.Events,
            DeviceErrors = stats.DeviceErrors,
            DeviceError = stats.LastError,
        };
    }

    // ---- internals ------------------------------------------------------------------------------------------------

    private bool ProcessOneLocked(BalloonVq? only)
    {
        int pick = -1;
        for (int q = 0; q < _queues.Length; q++)
        {
            if ((only is null || (int)only == q) && _queues[q].Count > 0
                && (pick < 0 || _queues[q].Peek().Seq < _queues[pick].Peek().Seq))
            {
                pick = q;
            }
        }

        if (pick < 0)
        {
            return false;
        }

        var (seq, buffer) = _queues[pick].Dequeue();
        Volatile.Write(ref _queuedCount, _queuedCount - 1);
        switch ((BalloonVq)pick)
        {
            case BalloonVq.Inflate:
                Inflate(buffer);
                break;
            case BalloonVq.Deflate:
                Deflate(buffer);
                break;
            case BalloonVq.Stats:
                ReceiveStats(seq, buffer);
                break;
            case BalloonVq.Reporting:
                ReceiveReport(buffer);
                break;
            default:
                GuestEvent(buffer);
                break;
        }

        MarkUsedLocked(seq);
        Monitor.PulseAll(_gate);
        GuestNotify?.Invoke();
        return true;
    }

    /// <summary>
    /// A stats buffer: its values become the latest statistics, and the device keeps the buffer as the next request
    /// token (it is not used until <see cref="RequestStats"/>). A malformed one is a device error and is given back.
    /// A second buffer while one is held breaks the one-outstanding rule: the old one is given back (as QEMU does).
    /// </summary>
    private void ReceiveStats(long seq, byte[] buffer)
    {
        var values = BalloonStats.Decode(buffer, out string? problem);
        if (values is null)
        {
            FailLocked(problem!);
            return;
        }

        if (_statsHeld >= 0)
        {
            FailLocked("stats: a second buffer while the device holds one (at most one may be outstanding)");
        }

        _statsHeld = seq;
        _guestStats = _guestStats with
        {
            LastUpdate = _time.GetUtcNow().ToUnixTimeSeconds(),
            Values = values,
            Reports = _guestStats.Reports + 1,
        };
    }

    private void ReceiveReport(byte[] buffer)
    {
        var (discarded, error) = _reporting!.Receive(buffer, _bitmap?.Log);
        if (error is not null)
        {
            FailLocked(error);
            return;
        }

        if (_bitmap is not null)
        {
            _migration.DiscardedDuring += discarded;
        }
    }

    private void DrainLocked()
    {
        while (ProcessOneLocked(null))
        {
        }
    }

    private void MarkUsedLocked(long seq)
    {
        if (seq != _usedUpTo + 1)
        {
            _usedOutOfOrder.Add(seq);
            return;
        }

        _usedUpTo = seq;
        while (_usedOutOfOrder.Remove(_usedUpTo + 1))
        {
            _usedUpTo++;
        }
    }

    private void Inflate(byte[] buffer)
    {
        _stats = _stats with { InflateRequests = _stats.InflateRequests + 1 };
        if (BalloonWire.Decode(Encoding, buffer, BalloonVq.Inflate, RamPages, _scratch) is string error)
        {
            FailLocked($"inflate: {error}");
            return;
        }

        foreach (var r in _scratch)
        {
            if (_held.CountRange(r.First, r.Count) != 0)
            {
                FailLocked($"inflate: pages of {r} are already in the balloon");
                return;
            }
        }

        long pages = 0;
        foreach (var r in _scratch)
        {
            _held.SetRange(r.First, r.Count);
            _ram.Discard(r.First, r.Count); // one madvise per merged range
            pages += r.Count;
            if (_bitmap is not null && _skipping)
            {
                _migration.PagesSkipped += ClearFromBitmap(_bitmap, r.First, r.Count);
            }
        }

        _migration.Inflated += pages;
        _stats = _stats with { PagesInflated = _stats.PagesInflated + pages };
    }

    private void Deflate(byte[] buffer)
    {
        _stats = _stats with { DeflateRequests = _stats.DeflateRequests + 1 };
        if (BalloonWire.Decode(Encoding, buffer, BalloonVq.Deflate, RamPages, _scratch) is string error)
        {
            FailLocked($"deflate: {error}");
            return;
        }

        // B6: what goes back of a request the balloon does not wholly hold is the defences' call.
        PageRange? notHeld = null;
        foreach (var r in _scratch)
        {
            if (_held.CountRange(r.First, r.Count) != r.Count)
            {
                notHeld = r;
                break;
            }
        }

        long pages = 0;
        foreach (var r in _defences.Returned(_scratch, r => _held.CountRange(r.First, r.Count)).ToList())
        {
            long held = _held.ClearRange(r.First, r.Count);
            if (held != 0)
            {
                _ram.WillNeed(r.First, r.Count);
                pages += held;
            }
        }

        if (notHeld is { } bad)
        {
            FailLocked($"deflate: pages of {bad} are not in the balloon" +
                (pages == 0 ? string.Empty : $"; the {pages} held pages it names are returned"));
        }

        _migration.Deflated += pages;
        _stats = _stats with { PagesDeflated = _stats.PagesDeflated + pages };
    }

    /// <summary>
    /// The host's policy for guest events: pressure of medium or worse, or a puff failure, lowers the target to what
    /// the guest holds (stop inflating); during a migration it also refuses to inflate further until it ends.
    /// </summary>
    private void GuestEvent(byte[] buffer)
    {
        if (BalloonEventWire.Decode(buffer, out var type, out uint value) is string error)
        {
            FailLocked($"events: {error}");
            return;
        }

        _migration.Events++;
        _stats = _stats with { GuestEvents = _stats.GuestEvents + 1 };
        var level = type == BalloonGuestEvent.Pressure ? (MemoryPressure)value : MemoryPressure.None;
        _pending.Add(Notification(type == BalloonGuestEvent.Pressure
            ? BalloonNotificationKind.Pressure
            : BalloonNotificationKind.PuffFailure, level));
        if (type == BalloonGuestEvent.PuffFailure || level >= MemoryPressure.Medium)
        {
            _pressureDuringMigration |= _bitmap is not null;
            if (TargetPages > ActualPages)
            {
                ChangeTargetLocked(ActualPages);
            }
        }
    }

    private void ChangeTargetLocked(long pages)
    {
        if (pages == TargetPages)
        {
            return;
        }

        TargetPages = pages;
        Interlocked.Increment(ref _configGeneration);
        _pending.Add(Notification(BalloonNotificationKind.TargetChanged));
        Monitor.PulseAll(_gate);
        GuestNotify?.Invoke();
    }

    private void FailLocked(string problem)
    {
        _stats = _stats with { DeviceErrors = _stats.DeviceErrors + 1, LastError = problem };
        _metrics.DeviceErrors.Add(1);
        _pending.Add(Notification(BalloonNotificationKind.DeviceError, message: problem));
    }

    // ---- the steps the defences take (under the lock) ------------------------------------------------------------

    void IBalloonDeviceSteps.UseQueued() => DrainLocked();

    List<PageRange> IBalloonDeviceSteps.Held() => HeldRangesLocked();

    long IBalloonDeviceSteps.Skip(IEnumerable<PageRange> ranges)
    {
        if ((_bitmap ?? _joining) is not { } bitmap || !_skipping)
        {
            return 0;
        }

        long cleared = 0;
        foreach (var r in ranges)
        {
            cleared += ClearFromBitmap(bitmap, r.First, r.Count);
        }

        return cleared;
    }

    /// <summary>As hint application does: under the bitmap lock, manual mode re-arming the chunks first.</summary>
    internal static long ClearFromBitmap(MigrationBitmap bitmap, long first, long count)
    {
        using (bitmap.Lock())
        {
            if (bitmap.Log.Mode == DirtyLogMode.Manual)
            {
                bitmap.Log.ClearChunksCovering(first, count);
            }

            return bitmap.Pages.ClearRange(first, count);
        }
    }

    private List<PageRange> HeldRangesLocked() => [.. _held.SetRuns().Select(r => new PageRange(r.First, r.Count))];

    private BalloonNotification Notification(BalloonNotificationKind kind, MemoryPressure level = MemoryPressure.None,
        string? message = null) => new(kind, TargetPages, ActualPages, level, message);

    private void RaisePending()
    {
        BalloonNotification[] batch;
        using (_scheduling.Lock(_gate))
        {
            if (_pending.Count == 0)
            {
                return;
            }

            batch = [.. _pending];
            _pending.Clear();
        }

        foreach (var n in batch)
        {
            Notified?.Invoke(n);
        }
    }

    private static string Name(BalloonVq q) => q.ToString().ToLowerInvariant();

    private struct MigrationCounters
    {
        public bool Skipping;
        public long PagesSkipped;
        public long Inflated;
        public long Deflated;
        public long Events;
        public bool SkippingDiscarded;
        public long DiscardedSkipped;
        public long DiscardedDuring;
    }
}

/// <summary>Free page reporting's totals since the device was created.</summary>
/// <param name="DiscardMapPages">Pages the discard map has now (some may be backed again).</param>
public sealed record PageReportingStats(long Reports, long BlocksReported, long PagesDiscarded, long PagesKeptPoisoned,
    long DiscardMapPages);

/// <summary>The device's totals (what <c>query-balloon</c> and the reports show).</summary>
public sealed record BalloonDeviceStats
{
    public long TargetPages { get; init; }

    public long ActualPages { get; init; }

    public long HeldPages { get; init; }

    public long InflateRequests { get; init; }

    public long DeflateRequests { get; init; }

    public long PagesInflated { get; init; }

    public long PagesDeflated { get; init; }

    public long GuestEvents { get; init; }

    public long DeviceErrors { get; init; }

    public string? LastError { get; init; }
}
