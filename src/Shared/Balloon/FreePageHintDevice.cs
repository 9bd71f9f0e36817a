using Migration.Shared.Concurrency;
using Migration.Shared.Devices;
using Migration.Shared.Diagnostics;
using Migration.Shared.DirtyTracking;

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
/// <para>One lock (QEMU's <c>free_page_lock</c>) serialises everything: a status change and a block's
/// check-and-apply never interleave.</para>
/// <para>This file has the config space, the queue and the hint thread; <c>FreePageHintDevice.Precopy.cs</c> has the
/// migration's side.</para>
/// </remarks>
public sealed partial class FreePageHintDevice : IPrecopyParticipant
{
    /// <summary>Virtqueue slots. Linux keeps one free for STOP, so at most Capacity-1 blocks are in flight.</summary>
    public const int DefaultQueueCapacity = 64;

    private readonly object _gate = new();
    private readonly Virtqueue<HintBuffer> _queue;
    private readonly long _ramPages;
    private readonly SchedulingPoints _scheduling;
    private readonly IHintDefences _defences;
    private readonly IDeviceThreads _threads;
    private readonly BalloonMetrics _metrics = BalloonMetrics.Shared;
    private bool _vmStopped;
    private bool _failed;
    private MigrationBitmap? _bitmap;
    private IDisposable? _hintThread;
    private HintStats _stats = new(); // this migration's, replaced at its setup

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
        _queue = new Virtqueue<HintBuffer>(queueCapacity, _gate);
        _scheduling = scheduling;
        _defences = defences;
        _threads = threads;
    }

    public int QueueCapacity => _queue.Capacity;

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
                return _queue.FreeSlots;
            }
        }
    }

    /// <summary>
    /// Buffers waiting for the hint thread. Read without the lock (a scheduler polls it while actors hold it).
    /// </summary>
    public int Queued => _queue.Count;

    /// <summary>What the device did in the running (or last) migration.</summary>
    public HintStats Stats
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return _stats;
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
            return _queue.IsUsed(seq);
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
        long seq = _queue.Add(buffer);
        if (seq < 0)
        {
            Fail($"free-page queue overflow: the guest added a buffer with all {QueueCapacity} slots in use");
        }

        return seq;
    }

    private bool ProcessOneLocked()
    {
        if ((_vmStopped && !_defences.ProcessesWhileStopped) || !_queue.TryTake(out long seq, out var buffer))
        {
            return false;
        }

        if (buffer.Kind == HintBufferKind.CommandId)
        {
            HandleCommandId(buffer);
        }
        else
        {
            HandleBlock(buffer);
        }

        _queue.MarkUsed(seq);
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
        _stats = _stats with { BlocksReceived = _stats.BlocksReceived + 1 };
        if (BlockProblem(buffer) is string problem)
        {
            Fail(problem);
            return;
        }

        bool current = _defences.IsCurrentRun(buffer.CommandId, CommandId);
        if (!HintStateMachine.AppliesBlock(Status, current) || _bitmap is null || _failed)
        {
            _stats = _stats with { BlocksDroppedStale = _stats.BlocksDroppedStale + 1 };
            _metrics.HintBlocks.Add(1, BalloonMetrics.Outcome("stale"));
            return;
        }

        long cleared = _defences.Apply(_bitmap, buffer.Pfn, buffer.Pages);
        _stats = _stats with
        {
            BlocksApplied = _stats.BlocksApplied + 1,
            PagesCleared = _stats.PagesCleared + cleared,
        };
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
        _stats = _stats with { DeviceErrors = _stats.DeviceErrors + 1, DeviceError = _stats.DeviceError ?? problem };
        _metrics.DeviceErrors.Add(1);
        _failed = true;
        if (_bitmap is not null)
        {
            Status = _defences.Next(Status, HintEvent.DeviceError);
        }

        _queue.DropAll();
    }
}
