using Migration.Shared.Concurrency;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Guest.Workloads;

namespace Migration.Shared.Balloon;

/// <summary>
/// The guest's virtio-balloon driver, free page hinting part (Linux drivers/virtio/virtio_balloon.c in shape): on a new
/// command id it sends START(id), then takes 4 MiB blocks from the buddy allocator and queues each as one buffer while
/// more than one slot is free (one stays for STOP), and sends STOP when the id changes or memory runs out. Blocks stay
/// held until the device reports DONE, or until the shrinker hands them back under memory pressure.
/// </summary>
/// <remarks>
/// <para>Wait-on-ack (H8, on by default): a held block is not given back before the device has used its buffer. Without
/// it, manual dirty-log mode can lose a write (race R5), which the engine refuses.</para>
/// <para>Giving a block back frees it through the allocator, which poisons it when poisoning is on (H6, race R12): on
/// the target a hinted block was never sent and holds zeros until then.</para>
/// <para>Held blocks are allocated with owner <see cref="PageOwner.Balloon"/>, so a restored guest finds them in its
/// descriptors; no driver state has to travel with the VM.</para>
/// </remarks>
public sealed class BalloonDriver
{
    /// <summary>Linux hints order-10 blocks (MAX_ORDER - 1 on x86): 1024 pages, 4 MiB.</summary>
    public const int DefaultBlockOrder = 10;

    private readonly GuestKernel _kernel;
    private readonly FreePageHintDevice _device;
    private readonly SchedulingPoints _scheduling;
    private readonly bool _initialiseOnRelease;
    private readonly object _gate = new();
    private readonly List<HeldBlock> _held = [];
    private uint _lastId = HintCommandId.Stop;
    private bool _running;

    public BalloonDriver(GuestKernel kernel, FreePageHintDevice device, bool waitOnAck,
        int blockOrder = DefaultBlockOrder)
        : this(kernel, device, waitOnAck, blockOrder, SchedulingPoints.None, initialiseOnRelease: true)
    {
    }

    /// <param name="initialiseOnRelease">
    /// Whether giving a block back initialises (poisons) it, as the spec requires of a driver that releases hinted
    /// pages. Always true in production; the race fuzzer's R12 mutant passes false.
    /// </param>
    internal BalloonDriver(GuestKernel kernel, FreePageHintDevice device, bool waitOnAck, int blockOrder,
        SchedulingPoints scheduling, bool initialiseOnRelease)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfNegative(blockOrder);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(blockOrder, GuestKernel.MaxOrder);
        BlockOrder = blockOrder;
        _kernel = kernel;
        _device = device;
        _scheduling = scheduling;
        _initialiseOnRelease = initialiseOnRelease;
        WaitOnAck = waitOnAck;
        kernel.Shrinker = Shrink;
        // A restored guest: blocks it held at migration stay held until the device says DONE.
        foreach (long pfn in kernel.BlocksOwnedBy(PageOwner.Balloon))
        {
            _held.Add(new HeldBlock(pfn, -1));
        }
    }

    public bool WaitOnAck { get; }

    /// <summary>Order of the blocks it hints (a guest setting, like MAX_ORDER in Linux).</summary>
    public int BlockOrder { get; }

    public long BlockPages => 1L << BlockOrder;

    public int HeldBlocks
    {
        get
        {
            using (_scheduling.Lock(_gate))
            {
                return _held.Count;
            }
        }
    }

    /// <summary>Blocks handed back early by the shrinker.</summary>
    public long ShrunkBlocks { get; private set; }

    /// <summary>
    /// How long the driver's thread may sleep after an idle step: while no run is under way or due, only a new command
    /// id or DONE (which releases the blocks it holds) gives it work, and the device's config change wakes it for
    /// both, so up to 1 s; during a run it waits for the device to use buffers and polls each millisecond.
    /// </summary>
    public TimeSpan IdleFor()
    {
        uint id = _device.ConfigCommandId;
        bool newRun = HintCommandId.IsRunId(id) && id != _lastId; // waiting for queue slots to start it
        return _running || newRun ? GuestThread.Poll : GuestThread.LongestSleep;
    }

    /// <summary>
    /// One step of the driver's work item. Idle means there is nothing to do until the device changes.
    /// </summary>
    public StepResult Step()
    {
        uint id = _device.ConfigCommandId;
        if (id == HintCommandId.Done)
        {
            _running = false;
            return ReleaseOne() ? StepResult.Progress : StepResult.Idle;
        }

        if (_running && id != _lastId)
        {
            // The device stopped this run (or moved on): finish it with STOP.
            if (_device.FreeSlots == 0)
            {
                return StepResult.Idle;
            }

            _running = false;
            Send(HintBuffer.Id(HintCommandId.Stop));
            return StepResult.Progress;
        }

        if (!_running)
        {
            if (!HintCommandId.IsRunId(id) || id == _lastId || _device.FreeSlots < 2)
            {
                return StepResult.Idle;
            }

            _lastId = id;
            _running = true;
            Send(HintBuffer.Id(id));
            return StepResult.Progress;
        }

        if (_device.FreeSlots <= 1)
        {
            return StepResult.Idle; // keep the last slot for STOP; the device will use some buffers
        }

        long pfn = _kernel.TryAllocate(BlockOrder, PageOwner.Balloon);
        if (pfn < 0)
        {
            _running = false;
            Send(HintBuffer.Id(HintCommandId.Stop));
            return StepResult.Progress;
        }

        long seq = _device.AddBuffer(HintBuffer.Block(id, pfn, BlockPages));
        if (seq < 0)
        {
            _kernel.Free(pfn, BlockOrder);
            return StepResult.Idle;
        }

        using (_scheduling.Lock(_gate))
        {
            _held.Add(new HeldBlock(pfn, seq));
        }

        return StepResult.Progress;
    }

    /// <summary>Gives back every held block (the device said DONE, or the driver is being removed).</summary>
    public int ReleaseAll()
    {
        int n = 0;
        while (ReleaseOne())
        {
            n++;
        }

        return n;
    }

    /// <summary>
    /// The shrinker: hands back the newest held block the device is done with (any, without wait-on-ack).
    /// </summary>
    private bool Shrink(int order)
    {
        HeldBlock? victim = null;
        using (_scheduling.Lock(_gate))
        {
            for (int i = _held.Count - 1; i >= 0; i--)
            {
                if (!WaitOnAck || _held[i].Seq < 0 || _device.IsUsed(_held[i].Seq))
                {
                    victim = _held[i];
                    _held.RemoveAt(i);
                    break;
                }
            }
        }

        if (victim is not { } block)
        {
            return false;
        }

        Release(block.Pfn);
        ShrunkBlocks++;
        return true;
    }

    private bool ReleaseOne()
    {
        HeldBlock block;
        using (_scheduling.Lock(_gate))
        {
            if (_held.Count == 0)
            {
                return false;
            }

            block = _held[^1];
            _held.RemoveAt(_held.Count - 1);
        }

        Release(block.Pfn);
        return true;
    }

    private void Release(long pfn) => _kernel.Free(pfn, BlockOrder, initialise: _initialiseOnRelease);

    private void Send(HintBuffer buffer) => _device.AddBuffer(buffer);

    private readonly record struct HeldBlock(long Pfn, long Seq);
}
