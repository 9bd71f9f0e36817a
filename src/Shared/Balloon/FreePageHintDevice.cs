using Migration.Shared.Concurrency;
using Migration.Shared.Devices;
using Migration.Shared.Diagnostics;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;

namespace Migration.Shared.Balloon;

/// <summary>
/// The host side of virtio-balloon free page hinting: status and command id, the free-page virtqueue, and the hint
/// thread that clears hinted pages from the migration bitmap so they are not sent. It joins a migration as a
/// precopy participant (QEMU's <c>virtio_balloon_free_page_hint_notify</c>).
/// </summary>
/// <remarks>
/// <para>The status follows <see cref="HintStateMachine"/> alone; the rules (README, "The protocol rules"):</para>
/// <list type="bullet">
/// <item>H1: <see cref="Setup"/> refuses to attach unless dirty logging is on.</item>
/// <item>
/// H2: before every sync the device stops hinting, after it issues a new id if the VM runs, DONE otherwise.
/// </item>
/// <item>H3, H4, H5: the decisions of <see cref="IHintDefences"/>.</item>
/// <item>H6: <see cref="Cleanup"/> (completion, failure, cancel) reports DONE and drops what is queued.</item>
/// <item>H9: a malformed buffer is a device error: hinting stops for this migration, which goes on without it.</item>
/// </list>
/// One lock (QEMU's <c>free_page_lock</c>) serialises everything: a status change and a block's check-and-apply
/// never interleave.
/// </remarks>
public sealed class FreePageHintDevice : IPrecopyParticipant
{
    /// <summary>Virtqueue slots. Linux keeps one free for STOP, so at most Capacity-1 blocks are in flight.</summary>
    public const int DefaultQueueCapacity = 64;

    private readonly object _gate = new();
    private readonly Queue<(long Seq, HintBuffer Buffer)> _queue = new();
    private readonly long _ramPages;
    private readonly SchedulingPoints _scheduling;
    private readonly IHintDefences _defences;
    private readonly IDeviceThreads _threads;
    private readonly BalloonMetrics _metrics = BalloonMetrics.Shared;
    private long _nextSeq;
    private long _usedUpTo = -1;
    private int _queuedCount;
    private bool _vmStopped;
    private bool _failed;
    private MigrationBitmap? _bitmap;
    private IDisposable? _hintThread;
    private Counters _counters;

    public FreePageHintDevice(long ramPages, int queueCapacity = DefaultQueueCapacity)
        : this(ramPages, queueCapacity, SchedulingPoints.None, StandardHintDefences.Instance,
            DedicatedDeviceThreads.Instance)
    {
    }

    internal FreePageHintDevice(long ramPages, int queueCapacity, SchedulingPoints scheduling, IHintDefences defences,
        IDeviceThreads threads)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(ramPages);
        ArgumentOutOfRangeException.ThrowIfLessThan(queueCapacity, 2);
        _ramPages = ramPages;
        QueueCapacity = queueCapacity;
        _scheduling = scheduling;
        _defences = defences;
        _threads = threads;
    }

    public int QueueCapacity { get; }

    public HintStatus Status
    {
        get;
        private set
        {
            field = value;
            ConfigChanged?.Invoke();
        }
    } = HintStatus.Done;

    /// <summary>The current (last issued) command id.</summary>
    public uint CommandId
    {
        get;
        private set
        {
            field = value;
            ConfigChanged?.Invoke();
        }
    } = HintCommandId.Min;

    /// <summary>
    /// Called whenever the id the guest reads may have changed (the config-change interrupt): the VM wakes the
    /// driver's thread with it. Called under the device's lock, so it must only signal.
    /// </summary>
    internal Action? ConfigChanged { get; set; }

    /// <summary>Poison value the guest negotiated (travels with the VM).</summary>
    public uint PoisonVal { get; init; }

    /// <summary>Negotiated feature bits (<see cref="BalloonFeatureBits"/>).</summary>
    public ulong FeatureBits { get; init; }

    /// <summary>The id the guest reads: the current id while REQUESTED or START, 0 when stopped, 1 when done.</summary>
    public uint ConfigCommandId
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return HintStateMachine.ConfigCommandId(Status, CommandId);
            }
        }
    }

    public int FreeSlots
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return QueueCapacity - _queue.Count;
            }
        }
    }

    /// <summary>
    /// Buffers waiting for the hint thread. Read without the lock (a scheduler polls it while actors hold it).
    /// </summary>
    public int Queued => Volatile.Read(ref _queuedCount);

    /// <summary>A copy of this migration's counters.</summary>
    public HintStats Stats
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return _counters.Snapshot();
            }
        }
    }

    /// <summary>The state that travels with the VM.</summary>
    public (HintStatus Status, uint CommandId) SavedState
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return (Status, CommandId);
            }
        }
    }

    /// <summary>Restores status and id on the target (from the migrated device state).</summary>
    public void Restore(HintStatus status, uint commandId)
    {
        using (_scheduling.Lock(_gate))
        {
            Status = status;
            CommandId = commandId;
        }
    }

    // ---- guest side -------------------------------------------------------------------------------------------

    /// <summary>
    /// The driver adds a buffer; returns its sequence number, or -1 when the queue is full, which is a device error
    /// (a driver that floods the queue).
    /// </summary>
    public long AddBuffer(HintBuffer buffer)
    {
        using (_scheduling.Lock(_gate))
        {
            long seq = AddLocked(buffer);
            Monitor.PulseAll(_gate);
            return seq;
        }
    }

    /// <summary>
    /// Adds several buffers and kicks once, as a driver that fills descriptors before notifying does: the hint thread
    /// sees none of them until all are queued. Stops at the first overflow (a device error); returns how many went in.
    /// </summary>
    public int AddBuffers(ReadOnlySpan<HintBuffer> buffers)
    {
        using (_scheduling.Lock(_gate))
        {
            int added = 0;
            foreach (var buffer in buffers)
            {
                if (AddLocked(buffer) < 0)
                {
                    break;
                }

                added++;
            }

            Monitor.PulseAll(_gate);
            return added;
        }
    }

    /// <summary>Whether the device has used (processed or dropped) the buffer with this sequence number.</summary>
    public bool IsUsed(long seq)
    {
        using (_scheduling.Lock(_gate))
        {
            return seq <= _usedUpTo;
        }
    }

    // ---- precopy participant ----------------------------------------------------------------------------------

    /// <summary>
    /// Joins a migration that asked for hinting: attaches the bitmap (H1: logging must already be on), resets the
    /// counters and starts the hint thread. The first id comes with the setup sync (H2).
    /// </summary>
    public bool Setup(PrecopySetup setup)
    {
        ArgumentNullException.ThrowIfNull(setup);
        if (!setup.Capabilities.FreePageHinting)
        {
            return false;
        }

        if (!setup.Bitmap.Log.Enabled)
        {
            throw new InvalidOperationException(
                "free page hinting needs dirty logging on before the first command id (H1)");
        }

        using (_scheduling.Lock(_gate))
        {
            _bitmap = setup.Bitmap;
            _failed = false;
            _counters = default;
            Status = _defences.Next(Status, HintEvent.Attach);
        }

        _hintThread = _threads.Start("hint thread", Run);
        return true;
    }

    /// <summary>H2, before a sync: no hint is applied until the next id.</summary>
    public void BeforeSync(bool vmRunning)
    {
        using (_scheduling.Lock(_gate))
        {
            if (_bitmap is not null)
            {
                Status = _defences.Next(Status, HintEvent.StopBeforeSync);
            }
        }
    }

    /// <summary>
    /// H2, after a sync: a new id if the VM runs, DONE otherwise; nothing once hinting has failed (H9).
    /// </summary>
    public void AfterSync(bool vmRunning)
    {
        using (_scheduling.Lock(_gate))
        {
            if (_bitmap is null || _failed)
            {
                return;
            }

            if (!vmRunning)
            {
                Status = _defences.Next(Status, HintEvent.FinalSync);
                return;
            }

            CommandId = HintCommandId.Next(CommandId);
            Status = _defences.Next(Status, HintEvent.NewCommandId);
            _counters.CommandIdsIssued++;
            _metrics.HintCommandIds.Add(1);
            Monitor.PulseAll(_gate);
        }
    }

    public void Complete()
    {
    }

    /// <summary>
    /// H6: completion, failure or cancel. DONE, detach, drop whatever is still queued, stop the hint thread.
    /// </summary>
    public void Cleanup(MigrationStatus outcome)
    {
        using (_scheduling.Lock(_gate))
        {
            if (_bitmap is not null)
            {
                Status = _defences.Next(Status, HintEvent.Detach);
            }

            _bitmap = null;
            DrainLocked();
            Monitor.PulseAll(_gate);
        }

        _hintThread?.Dispose();
        _hintThread = null;
    }

    public void Report(MigrationReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var stats = Stats;
        report.Transfer.PagesSkippedByHints = stats.PagesCleared;
        report.Hints = new MigrationReport.HintsSection
        {
            WaitOnAck = (FeatureBits & BalloonFeatureBits.HintWaitOnAck) != 0,
            CmdIds = stats.CommandIdsIssued,
            BlocksReceived = stats.BlocksReceived,
            BlocksApplied = stats.BlocksApplied,
            BlocksDroppedStale = stats.BlocksDroppedStale,
            PagesCleared = stats.PagesCleared,
            DeviceErrors = stats.DeviceErrors,
            DeviceError = stats.Error,
        };
    }

    /// <summary>H5: the VM stopped or resumed (QEMU's VM state change handler).</summary>
    public void SetVmRunning(bool running)
    {
        using (_scheduling.Lock(_gate))
        {
            _vmStopped = !running;
            Monitor.PulseAll(_gate);
        }
    }

    // ---- hint thread -------------------------------------------------------------------------------------------

    /// <summary>
    /// Processes one queued buffer. Returns false when there is nothing to do (empty, or the VM is stopped).
    /// </summary>
    public bool ProcessOne()
    {
        using (_scheduling.Lock(_gate))
        {
            return ProcessOneLocked();
        }
    }

    /// <summary>
    /// The hint thread's loop: process buffers as they come until <paramref name="ct"/> is cancelled.
    /// </summary>
    private void Run(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            using (_scheduling.Lock(_gate))
            {
                if (!ProcessOneLocked())
                {
                    Monitor.Wait(_gate, 20);
                }
            }
        }
    }

    private long AddLocked(HintBuffer buffer)
    {
        if (_queue.Count >= QueueCapacity)
        {
            Fail($"free-page queue overflow: the guest added a buffer with all {QueueCapacity} slots in use");
            return -1;
        }

        long seq = _nextSeq++;
        _queue.Enqueue((seq, buffer));
        Volatile.Write(ref _queuedCount, _queue.Count);
        return seq;
    }

    private bool ProcessOneLocked()
    {
        if ((_vmStopped && !_defences.ProcessesWhileStopped) || _queue.Count == 0)
        {
            return false;
        }

        var (seq, buffer) = _queue.Dequeue();
        Volatile.Write(ref _queuedCount, _queue.Count);
        if (buffer.Kind == HintBufferKind.CommandId)
        {
            HandleCommandId(buffer);
        }
        else
        {
            HandleBlock(buffer);
        }

        _usedUpTo = Math.Max(_usedUpTo, seq);
        Monitor.PulseAll(_gate);
        return true;
    }

    private void HandleCommandId(HintBuffer buffer)
    {
        if (buffer.Length != sizeof(uint))
        {
            Fail($"command-id buffer of {buffer.Length} bytes (expected 4)");
            return;
        }

        var e = _defences.IsCurrentRun(buffer.CommandId, CommandId)
            ? HintEvent.CurrentIdBuffer
            : HintEvent.OtherIdBuffer;
        Status = _defences.Next(Status, e);
    }

    private void HandleBlock(HintBuffer buffer)
    {
        _counters.BlocksReceived++;
        if (BlockProblem(buffer) is string problem)
        {
            Fail(problem);
            return;
        }

        bool current = _defences.IsCurrentRun(buffer.CommandId, CommandId);
        if (!HintStateMachine.AppliesBlock(Status, current) || _bitmap is null || _failed)
        {
            _counters.BlocksDroppedStale++;
            _metrics.HintBlocks.Add(1, BalloonMetrics.Outcome("stale"));
            return;
        }

        long cleared = _defences.Apply(_bitmap, buffer.Pfn, buffer.Pages);
        _counters.BlocksApplied++;
        _counters.PagesCleared += cleared;
        _metrics.HintBlocks.Add(1, BalloonMetrics.Outcome("applied"));
        _metrics.HintPagesCleared.Add(cleared);
    }

    private string? BlockProblem(HintBuffer b) => b switch
    {
        { Pages: <= 0 } => $"free block of {b.Pages} pages at page {b.Pfn}",
        _ when b.Pfn < 0 || b.Pfn > _ramPages - b.Pages =>
            $"free block [{b.Pfn}, +{b.Pages}) is outside guest RAM ({_ramPages} pages)",
        _ when (b.Pages & (b.Pages - 1)) != 0 || (b.Pfn & (b.Pages - 1)) != 0 =>
            $"free block of {b.Pages} pages at page {b.Pfn} is misaligned",
        _ => null,
    };

    /// <summary>H9: record the error, stop hinting for this migration (DONE), drop what is queued.</summary>
    private void Fail(string problem)
    {
        _counters.DeviceErrors++;
        _counters.Error ??= problem;
        _metrics.DeviceErrors.Add(1);
        _failed = true;
        if (_bitmap is not null)
        {
            Status = _defences.Next(Status, HintEvent.DeviceError);
        }

        DrainLocked();
    }

    private void DrainLocked()
    {
        while (_queue.TryDequeue(out var item))
        {
            _usedUpTo = Math.Max(_usedUpTo, item.Seq);
        }

        Volatile.Write(ref _queuedCount, 0);
    }

    /// <summary>The migration's counters, mutated under the device lock only.</summary>
    private struct Counters
    {
        public long CommandIdsIssued;
        public long BlocksReceived;
        public long BlocksApplied;
        public long BlocksDroppedStale;
        public long PagesCleared;
        public long DeviceErrors;
        public string? Error;

        public readonly HintStats Snapshot() => new()
        {
            CommandIdsIssued = CommandIdsIssued,
            BlocksReceived = BlocksReceived,
            BlocksApplied = BlocksApplied,
            BlocksDroppedStale = BlocksDroppedStale,
            PagesCleared = PagesCleared,
            DeviceErrors = DeviceErrors,
            Error = Error,
        };
    }
}
