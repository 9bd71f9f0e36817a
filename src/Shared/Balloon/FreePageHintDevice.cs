using Migration.Shared.Concurrency;
using Migration.Shared.DirtyTracking;

namespace Migration.Shared.Balloon;

/// <summary>Free-page-hint states of the balloon device, with QEMU's values.</summary>
public enum HintStatus : uint
{
    Stop = 0,
    Requested = 1,
    Start = 2,
    Done = 3,
}

/// <summary>Command-id values: what the guest reads from the device's config.</summary>
public static class HintCommandId
{
    public const uint Stop = 0;
    public const uint Done = 1;

    /// <summary>Ids are above this; the first one issued is <c>Min + 1</c>, and they wrap back to it.</summary>
    public const uint Min = 0x80000000;

    public static bool IsRunId(uint id) => id > Min;
}

public enum HintBufferKind
{
    /// <summary>A command-id buffer: START(id) when it echoes the current id, otherwise it means STOP.</summary>
    CommandId,

    /// <summary>One free block the guest hands over, tagged with the id of the run that found it.</summary>
    FreeBlock,
}

/// <summary>
/// One buffer on the free-page virtqueue. <see cref="Length"/> is the byte length of a command-id buffer (it must be 4);
/// <see cref="Pfn"/> and <see cref="Pages"/> describe a free block.
/// </summary>
public readonly record struct HintBuffer(HintBufferKind Kind, uint CommandId, long Pfn = 0, long Pages = 0, int Length = 4)
{
    public static HintBuffer Id(uint id) => new(HintBufferKind.CommandId, id);

    public static HintBuffer Block(uint id, long pfn, long pages) => new(HintBufferKind.FreeBlock, id, pfn, pages, 0);
}

/// <summary>What the device did during one migration (the report's <c>hints</c> section).</summary>
public sealed record HintStats
{
    public long CmdIds { get; set; }

    public long BlocksReceived { get; set; }

    public long BlocksApplied { get; set; }

    public long BlocksDroppedStale { get; set; }

    public long PagesCleared { get; set; }

    public long DeviceErrors { get; set; }

    /// <summary>The first device error, which stopped hinting for the migration.</summary>
    public string? Error { get; set; }
}

/// <summary>
/// The host side of virtio-balloon free page hinting: status and command id, the free-page virtqueue, and the
/// hint thread's processing, which clears hinted pages from the migration bitmap so they are not sent.
/// </summary>
/// <remarks>
/// <para>The rules (README, "The hint protocol") in one place:</para>
/// <list type="bullet">
/// <item>H1: <see cref="BeginMigration"/> refuses to start unless dirty logging is on.</item>
/// <item>H2: the engine calls <see cref="StopHinting"/> before every sync and <see cref="AfterSync"/> after it, which
/// issues a new id if the VM runs and reports DONE otherwise.</item>
/// <item>H3: an id buffer moves REQUESTED to START only when it equals the current id; any other id buffer while
/// START means the guest stopped; a replayed id never restarts hinting.</item>
/// <item>H4: a block is applied only in START and only with the current id: under the bitmap lock, the dirty-log chunks
/// covering it are cleared first (manual mode), then its migration-bitmap bits.</item>
/// <item>H5: while the VM is stopped nothing is processed.</item>
/// <item>H6: <see cref="EndMigration"/> (completion, failure, cancel) reports DONE and drops what is queued.</item>
/// <item>H9: a malformed buffer is a device error: hinting stops for this migration, which goes on without it.</item>
/// </list>
/// Everything is serialised by one lock (QEMU's free_page_lock): a status change and a block's check-and-apply never
/// interleave.
/// </remarks>
public sealed class FreePageHintDevice
{
    /// <summary>Virtqueue slots. Linux keeps one free for STOP, so at most Capacity-1 blocks are in flight.</summary>
    public const int DefaultQueueCapacity = 64;

    private readonly object _gate = new();
    private readonly Queue<(long Seq, HintBuffer Buffer)> _queue = new();
    private readonly long _ramPages;
    private readonly RaceHooks _hooks;
    private long _nextSeq;
    private long _usedUpTo = -1;
    private bool _vmStopped;
    private bool _failed;
    private PageBitmap? _bitmap;
    private object? _bitmapLock;
    private DirtyLog? _log;
    private HintStats _stats = new();

    public FreePageHintDevice(long ramPages, int queueCapacity = DefaultQueueCapacity, RaceHooks? hooks = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(ramPages);
        ArgumentOutOfRangeException.ThrowIfLessThan(queueCapacity, 2);
        _ramPages = ramPages;
        QueueCapacity = queueCapacity;
        _hooks = hooks ?? RaceHooks.None;
    }

    public int QueueCapacity { get; }

    public HintStatus Status { get; private set; } = HintStatus.Done;

    /// <summary>The current (last issued) command id.</summary>
    public uint CommandId { get; private set; } = HintCommandId.Min;

    /// <summary>Poison value the guest negotiated (travels with the VM).</summary>
    public uint PoisonVal { get; set; }

    /// <summary>Negotiated feature bits (<see cref="Features"/>).</summary>
    public ulong FeatureBits { get; set; }

    /// <summary>Called after each applied block with its range and the bitmap bits it cleared (fuzzer bookkeeping).</summary>
    public Action<long, long, long>? Applied { get; set; }

    /// <summary>Called for every buffer the guest adds (fuzzer bookkeeping).</summary>
    public Action<HintBuffer>? Added { get; set; }

    /// <summary>The id the guest reads: the current id while REQUESTED or START, 0 when stopped, 1 when done.</summary>
    public uint ConfigCommandId
    {
        get
        {
            using (_hooks.Lock(_gate))
            {
                return Status switch
                {
                    HintStatus.Requested or HintStatus.Start => CommandId,
                    HintStatus.Stop => HintCommandId.Stop,
                    _ => HintCommandId.Done,
                };
            }
        }
    }

    public int FreeSlots
    {
        get
        {
            using (_hooks.Lock(_gate))
            {
                return QueueCapacity - _queue.Count;
            }
        }
    }

    /// <summary>Buffers waiting for the hint thread. Read without the lock (a scheduler polls it while actors hold it).</summary>
    public int Queued => Volatile.Read(ref _queuedCount);

    private int _queuedCount;

    /// <summary>A copy of this migration's counters.</summary>
    public HintStats Stats
    {
        get
        {
            using (_hooks.Lock(_gate))
            {
                return _stats with { };
            }
        }
    }

    /// <summary>Restores status, id and negotiated values on the target (from the migrated device state).</summary>
    public void Restore(HintStatus status, uint commandId, uint poisonVal, ulong features)
    {
        using (_hooks.Lock(_gate))
        {
            Status = status;
            CommandId = commandId;
            PoisonVal = poisonVal;
            FeatureBits = features;
        }
    }

    // ---- guest side -------------------------------------------------------------------------------------------

    /// <summary>
    /// The driver adds a buffer; returns its sequence number, or -1 when the queue is full, which is a device error
    /// (a driver that floods the queue).
    /// </summary>
    public long AddBuffer(HintBuffer buffer)
    {
        using (_hooks.Lock(_gate))
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
        using (_hooks.Lock(_gate))
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
        using (_hooks.Lock(_gate))
        {
            return seq <= _usedUpTo;
        }
    }

    // ---- migration side ---------------------------------------------------------------------------------------

    /// <summary>Attaches the migration's bitmap and log (H1: logging must already be on) and resets the counters.</summary>
    public void BeginMigration(PageBitmap bitmap, object bitmapLock, DirtyLog log)
    {
        ArgumentNullException.ThrowIfNull(bitmap);
        ArgumentNullException.ThrowIfNull(bitmapLock);
        ArgumentNullException.ThrowIfNull(log);
        if (!log.Enabled && !_hooks.Has(Mutation.HintBeforeLogging))
        {
            throw new InvalidOperationException("free page hinting needs dirty logging on before the first command id (H1)");
        }

        using (_hooks.Lock(_gate))
        {
            _bitmap = bitmap;
            _bitmapLock = bitmapLock;
            _log = log;
            _failed = false;
            _stats = new HintStats();
            Status = HintStatus.Stop;
        }
    }

    /// <summary>H2, before a sync: no hint is applied until the next id.</summary>
    public void StopHinting()
    {
        using (_hooks.Lock(_gate))
        {
            if (Status is HintStatus.Requested or HintStatus.Start)
            {
                Status = HintStatus.Stop;
            }
        }
    }

    /// <summary>H2, after a sync: a new id if the VM runs (and hinting has not failed), DONE otherwise.</summary>
    public void AfterSync(bool vmRunning)
    {
        using (_hooks.Lock(_gate))
        {
            if (_bitmap is null)
            {
                return;
            }

            if (!vmRunning || _failed)
            {
                Status = HintStatus.Done;
                return;
            }

            CommandId = CommandId == uint.MaxValue ? HintCommandId.Min + 1 : CommandId + 1;
            Status = HintStatus.Requested;
            _stats.CmdIds++;
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>H6: completion, failure or cancel. DONE, detach, and drop whatever is still queued.</summary>
    public void EndMigration()
    {
        using (_hooks.Lock(_gate))
        {
            Status = HintStatus.Done;
            _bitmap = null;
            _bitmapLock = null;
            _log = null;
            DrainLocked();
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>H5: the VM stopped or resumed (QEMU's VM state change handler).</summary>
    public void SetVmRunning(bool running)
    {
        using (_hooks.Lock(_gate))
        {
            _vmStopped = !running;
            Monitor.PulseAll(_gate);
        }
    }

    // ---- hint thread -------------------------------------------------------------------------------------------

    /// <summary>Processes one queued buffer. Returns false when there is nothing to do (empty, or the VM is stopped).</summary>
    public bool ProcessOne()
    {
        using (_hooks.Lock(_gate))
        {
            return ProcessOneLocked();
        }
    }

    /// <summary>The hint thread's loop: process buffers as they come until <paramref name="ct"/> is cancelled.</summary>
    public void Run(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            using (_hooks.Lock(_gate))
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
        Added?.Invoke(buffer);
        Volatile.Write(ref _queuedCount, _queue.Count);
        return seq;
    }

    private bool ProcessOneLocked()
    {
        if ((_vmStopped && !_hooks.Has(Mutation.ApplyWhileStopped)) || _queue.Count == 0)
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

        // H3: only REQUESTED moves to START, and only for the current id. Mutant R10 lets the current id restart hinting
        // from STOP (a replayed START); mutant R1 lets any run id start it (an old run's START arriving late).
        bool idMatches = buffer.CommandId == CommandId
            || (_hooks.Has(Mutation.AcceptStaleIds) && HintCommandId.IsRunId(buffer.CommandId));
        bool stateAllows = Status == HintStatus.Requested
            || (_hooks.Has(Mutation.HonourReplayedStart) && Status == HintStatus.Stop && buffer.CommandId == CommandId);
        if (idMatches && stateAllows)
        {
            Status = HintStatus.Start;
        }
        else if (Status == HintStatus.Start)
        {
            Status = HintStatus.Stop; // STOP, or an id from another run: the guest has stopped
        }
    }

    private void HandleBlock(HintBuffer buffer)
    {
        _stats.BlocksReceived++;
        string? problem = buffer switch
        {
            { Pages: <= 0 } => $"free block of {buffer.Pages} pages at page {buffer.Pfn}",
            _ when buffer.Pfn < 0 || buffer.Pfn > _ramPages - buffer.Pages => $"free block [{buffer.Pfn}, +{buffer.Pages}) is outside guest RAM ({_ramPages} pages)",
            _ when (buffer.Pages & (buffer.Pages - 1)) != 0 || (buffer.Pfn & (buffer.Pages - 1)) != 0 => $"free block of {buffer.Pages} pages at page {buffer.Pfn} is misaligned",
            _ => null,
        };
        if (problem is not null)
        {
            Fail(problem);
            return;
        }

        bool idOk = buffer.CommandId == CommandId || _hooks.Has(Mutation.AcceptStaleIds);
        if (Status != HintStatus.Start || !idOk || _bitmap is null || _failed)
        {
            _stats.BlocksDroppedStale++;
            return;
        }

        // H4: under the bitmap lock; in manual mode re-arm the log chunks first, or the pages come back at the next
        // sync (R6). Eager mode never touches the write log (R4).
        long cleared;
        using (_hooks.Lock(_bitmapLock!))
        {
            if (_log!.Mode == DirtyLogMode.Manual && !_hooks.Has(Mutation.HintWithoutChunkClear))
            {
                _log.ClearChunksCovering(buffer.Pfn, buffer.Pages);
            }

            if (_hooks.Has(Mutation.HintClearsWriteLog))
            {
                _log.WipeRange(buffer.Pfn, buffer.Pages);
            }

            cleared = _bitmap.ClearRange(buffer.Pfn, buffer.Pages);
        }

        _stats.BlocksApplied++;
        _stats.PagesCleared += cleared;
        Applied?.Invoke(buffer.Pfn, buffer.Pages, cleared);
    }

    /// <summary>H9: record the error, stop hinting for this migration (DONE), drop what is queued.</summary>
    private void Fail(string problem)
    {
        _stats.DeviceErrors++;
        _stats.Error ??= problem;
        _failed = true;
        if (_bitmap is not null)
        {
            Status = HintStatus.Done;
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
}

/// <summary>Balloon feature bits we negotiate (virtio numbering where one exists).</summary>
public static class Features
{
    public const ulong FreePageHint = 1UL << 3;   // VIRTIO_BALLOON_F_FREE_PAGE_HINT
    public const ulong PagePoison = 1UL << 4;     // VIRTIO_BALLOON_F_PAGE_POISON
    public const ulong HintWaitOnAck = 1UL << 6;  // the 2026 proposal: no reuse of a hinted block before it is used
}
