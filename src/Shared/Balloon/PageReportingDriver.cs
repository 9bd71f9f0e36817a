using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Guest.Workloads;

namespace Migration.Shared.Balloon;

/// <summary>
/// The guest's free page reporting (Linux's <c>mm/page_reporting.c</c> with virtio-balloon as its device): frees of
/// blocks of at least the reporting order request a pass; the pass starts after a delay (2 s) so frees accumulate,
/// walks each free list from the reporting order up with a budget of about 1/16 of the list, isolates up to
/// <see cref="ReportingWire.Capacity"/> unreported blocks per request, waits for the device to use the request (the
/// host discards the blocks meanwhile) and puts them back at the tail of their lists flagged Reported. Runs on its own
/// guest thread.
/// </summary>
/// <remarks>
/// <para>Isolation is the defence against the race Linux's design is built around (R20): while the device has a
/// block, the allocator cannot hand it out, so no store can land in a page the host is about to discard. A block goes
/// back only once the request is used.</para>
/// <para>Nothing here is host state that matters across a migration: isolated blocks are recorded in the guest's own
/// descriptors, so a restored driver finds the blocks of a request it had in flight and returns them unreported (the
/// target's device never saw the request; the next pass reports them again).</para>
/// </remarks>
public sealed class PageReportingDriver
{
    private static readonly TimeSpan AckWait = TimeSpan.FromMilliseconds(20);

    private readonly GuestKernel _kernel;
    private readonly BalloonDevice _device;
    private readonly TimeProvider _time;
    private readonly IBalloonDefences _defences;
    private readonly long _delayTicks;
    private readonly TimeSpan _delay;
    private readonly long _watermarkPages;
    private readonly List<long> _batch = new(ReportingWire.Capacity);
    private int _requested;
    private long _dueAt;
    private bool _passActive;
    private int _order;
    private long _budget;
    private Request? _inFlight;
    private List<(long Pfn, int Order)>? _orphans;
    private long _passes;
    private long _blocksReported;
    private long _pagesReported;

    public PageReportingDriver(GuestKernel kernel, BalloonDevice device, BalloonOptions options,
        TimeProvider? time = null)
        : this(kernel, device, options, time ?? TimeProvider.System, StandardBalloonDefences.Instance)
    {
    }

    internal PageReportingDriver(GuestKernel kernel, BalloonDevice device, BalloonOptions options, TimeProvider time,
        IBalloonDefences defences)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(options);
        _kernel = kernel;
        _device = device;
        _time = time;
        _defences = defences;
        Order = options.ReportingOrder;
        BudgetDivisor = options.ReportingBudgetDivisor;
        _delay = TimeSpan.FromMilliseconds(options.ReportingDelayMs);
        _delayTicks = (long)(options.ReportingDelayMs / 1000.0 * time.TimestampFrequency);
        // Linux keeps the zone's low watermark free of reporting; ours is 1/512 of RAM, at least 1 MiB.
        _watermarkPages = Math.Max(256, kernel.Layout.PageCount / 512);
        // A restored guest's request in flight: its blocks go back on the driver's first step, once the guest runs.
        // Not here: the target builds the driver before it verifies RAM, which must still be the source's.
        _orphans = [.. kernel.IsolatedForReporting()];
        kernel.BlockFreed = OnBlockFreed;
        RequestPass(); // Linux flushes once at registration: what is free at boot is reported too
    }

    /// <summary>The smallest order reported.</summary>
    public int Order { get; }

    /// <summary>A pass takes about 1/<see cref="BudgetDivisor"/> of each free list.</summary>
    public int BudgetDivisor { get; }

    /// <summary>Free pages kept unreported (the allocator's low watermark).</summary>
    public long WatermarkPages => _watermarkPages;

    public long Passes => Interlocked.Read(ref _passes);

    public long BlocksReported => Interlocked.Read(ref _blocksReported);

    public long PagesReported => Interlocked.Read(ref _pagesReported);

    /// <summary>Whether a pass is requested, running, or a request is in flight.</summary>
    public bool Busy => _inFlight is not null || _passActive || Volatile.Read(ref _requested) != 0 ||
        _orphans is { Count: > 0 };

    /// <summary>Asks for a pass after the delay, unless one is already requested (page_reporting_request).</summary>
    public void RequestPass()
    {
        if (Interlocked.Exchange(ref _requested, 1) == 0)
        {
            Volatile.Write(ref _dueAt, _time.GetTimestamp() + _delayTicks);
        }
    }

    /// <summary>
    /// How long the driver's thread may sleep after an idle step, at most 1 s: until the requested pass is due, or,
    /// with none requested, no longer than the delay (a request made meanwhile then still starts on time). It
    /// polls every millisecond while a request is in flight, and under a clock other than the system's (a test's
    /// clock moves when the test says, not while we sleep).
    /// </summary>
    public TimeSpan IdleFor()
    {
        if (_time != TimeProvider.System || _inFlight is not null || _passActive || _orphans is { Count: > 0 })
        {
            return GuestThread.Poll;
        }

        return GuestThread.Sleep(Volatile.Read(ref _requested) != 0
            ? _time.GetElapsedTime(_time.GetTimestamp(), Volatile.Read(ref _dueAt))
            : _delay);
    }

    /// <summary>One step of the driver's thread.</summary>
    public StepResult Step()
    {
        if (_orphans is { } orphans)
        {
            _orphans = null;
            foreach (var (pfn, order) in orphans)
            {
                _kernel.PutBackReported(pfn, order, reported: false);
            }

            if (orphans.Count > 0)
            {
                return StepResult.Progress;
            }
        }

        if (_inFlight is { } request)
        {
            if (!_device.WaitUsed(request.Seq, AckWait))
            {
                return StepResult.Idle;
            }

            _inFlight = null;
            if (!request.Returned)
            {
                PutBack(request, reported: true);
            }

            Interlocked.Add(ref _blocksReported, request.Blocks.Length);
            Interlocked.Add(ref _pagesReported, (long)request.Blocks.Length << request.Order);
            return StepResult.Progress;
        }

        if (!_passActive)
        {
            if (Volatile.Read(ref _requested) == 0 || _time.GetTimestamp() < Volatile.Read(ref _dueAt))
            {
                return StepResult.Idle;
            }

            Volatile.Write(ref _requested, 0);
            _passActive = true;
            _order = Order;
            _budget = Budget(_order);
        }

        while (_order <= GuestKernel.MaxOrder)
        {
            if (_budget > 0)
            {
                _batch.Clear();
                if (_kernel.IsolateForReporting(_order, ReportingWire.Capacity, _watermarkPages, _batch) > 0)
                {
                    _budget--;
                    return Report();
                }
            }
            else if (_kernel.HasUnreported(_order))
            {
                RequestPass(); // the budget ran out: the rest waits for the next pass
            }

            _order++;
            _budget = _order <= GuestKernel.MaxOrder ? Budget(_order) : 0;
        }

        _passActive = false;
        Interlocked.Increment(ref _passes);
        return StepResult.Progress;
    }

    private StepResult Report()
    {
        var request = new Request([.. _batch], _order);
        request.Seq = _device.Kick(BalloonVq.Reporting, ReportingWire.Encode(request.Blocks, request.Order));
        if (request.Seq < 0)
        {
            // The queue refused it (the device recorded why): the blocks go back unreported, a later pass retries.
            PutBack(request, reported: false);
            _passActive = false;
            RequestPass();
            return StepResult.Progress;
        }

        _inFlight = request;
        if (!_defences.ReturnsReportedAfterAck)
        {
            PutBack(request, reported: true);
            request.Returned = true;
        }

        return StepResult.Progress;
    }

    private void PutBack(Request request, bool reported)
    {
        foreach (long pfn in request.Blocks)
        {
            _kernel.PutBackReported(pfn, request.Order, reported);
        }
    }

    /// <summary>Linux's budget: DIV_ROUND_UP(nr_free, capacity x 16) requests of this order per pass.</summary>
    private long Budget(int order)
    {
        long blocks = _kernel.FreeBlocks(order);
        long perPass = (long)ReportingWire.Capacity * BudgetDivisor;
        return (blocks + perPass - 1) / perPass;
    }

    private void OnBlockFreed(int order)
    {
        if (order >= Order)
        {
            RequestPass();
        }
    }

    private sealed class Request(long[] blocks, int order)
    {
        public long[] Blocks { get; } = blocks;

        public int Order { get; } = order;

        public long Seq { get; set; }

        public bool Returned { get; set; }
    }
}
