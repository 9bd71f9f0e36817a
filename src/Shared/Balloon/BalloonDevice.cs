using Migration.Shared.Concurrency;
using Migration.Shared.Devices;
using Migration.Shared.Diagnostics;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;

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
/// <para>This file has the config space, the device thread that serves the queues, the device's figures and its
/// notifications. The rest is split by what it serves: <c>BalloonDevice.Queues.cs</c> (buffers in, used buffers
/// out), <c>BalloonDevice.InflateDeflate.cs</c> (the held map, inflate, deflate, guest events),
/// <c>BalloonDevice.Stats.cs</c> (the statistics queue), <c>BalloonDevice.Reporting.cs</c> (free page reporting) and
/// <c>BalloonDevice.Precopy.cs</c> (the migration).</para>
/// </remarks>
public sealed partial class BalloonDevice : IPrecopyParticipant, IBalloonDeviceSteps
{
    /// <summary>Slots per virtqueue (QEMU's balloon queues have 128).</summary>
    public const int DefaultQueueCapacity = 128;

    private readonly object _gate = new();
    private readonly GuestRam _ram;
    private readonly SchedulingPoints _scheduling;
    private readonly IDeviceThreads _threads;
    private readonly IBalloonDefences _defences;
    private readonly BalloonMetrics _metrics = BalloonMetrics.Shared;
    private readonly Virtqueue<byte[]>[] _queues; // by BalloonVq, one numbering: a driver names a buffer by number
    private readonly List<BalloonNotification> _pending = [];
    private BalloonDeviceStats _stats = new();
    private IDisposable? _thread;
    private int _configGeneration;

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
        var first = new Virtqueue<byte[]>(queueCapacity, _gate);
        _queues = [.. Enum.GetValues<BalloonVq>().Select((_, i) => i == 0 ? first : first.Sibling())];
    }

    /// <summary>
    /// The device's interrupt to the guest: it used a buffer, gave the stats buffer back, or changed the config. The
    /// VM wakes its drivers' threads with it. Called under the device's lock, so it must only signal.
    /// </summary>
    internal Action? GuestNotify { get; init; }

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

    /// <summary>Buffers waiting on any queue. Read without the lock (a scheduler polls it while actors hold it).</summary>
    public int Queued => _queues.Sum(q => q.Count);

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

    // ---- config space (the host writes num_pages, the guest actual) -------------------------------------------

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

    // ---- device thread ------------------------------------------------------------------------------------------

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

    /// <summary>Uses the oldest buffer on <paramref name="only"/>, or on any queue when null.</summary>
    private bool ProcessOneLocked(BalloonVq? only)
    {
        int pick = -1;
        for (int q = 0; q < _queues.Length; q++)
        {
            if ((only is null || (int)only == q) && _queues[q].Count > 0
                && (pick < 0 || _queues[q].OldestSeq < _queues[pick].OldestSeq))
            {
                pick = q;
            }
        }

        if (pick < 0 || !_queues[pick].TryTake(out long seq, out byte[] buffer))
        {
            return false;
        }

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

        _queues[pick].MarkUsed(seq);
        GuestNotify?.Invoke();
        return true;
    }

    private void DrainLocked()
    {
        while (ProcessOneLocked(null))
        {
        }
    }

    // ---- errors and notifications -------------------------------------------------------------------------------

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
}
