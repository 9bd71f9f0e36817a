using Migration.Shared.Balloon;
using Migration.Shared.Concurrency;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Guest.Workloads;

namespace Migration.Shared.Guest;

public enum VmRunState
{
    /// <summary>Booted or restored; vCPU threads not started.</summary>
    Created,
    Running,
    Paused,
    ShutDown,
}

/// <summary>
/// A simulated VM: guest RAM with its in-RAM kernel, the dirty log, and one thread per vCPU running the workload.
/// </summary>
/// <remarks>
/// <see cref="Pause"/> returns once every vCPU is parked between two steps, so guest memory is quiescent (the "stopped
/// VM" of stop-and-copy). A vCPU whose step throws is halted and its error kept in <see cref="Crashes"/>, like a guest
/// panic; the other vCPUs go on. For the race fuzzer, a VM that is never <see cref="Start"/>ed is driven one step at a
/// time with <see cref="StepVcpu"/>.
/// </remarks>
public sealed class VirtualMachine : IDisposable
{
    private readonly object _gate = new();
    private readonly RaceHooks _hooks;
    private readonly List<string> _crashes = [];
    private Thread[] _threads = [];
    private bool _pauseRequested;
    private bool _stopRequested;
    private int _parked;
    private int _live;

    private VirtualMachine(GuestConfig config, GuestRam ram, GuestKernel kernel, Workload[] workloads, RaceHooks hooks)
    {
        Config = config;
        Ram = ram;
        Kernel = kernel;
        Workloads = workloads;
        _hooks = hooks;
        HintDevice = new FreePageHintDevice(ram.PageCount, hooks: hooks)
        {
            PoisonVal = config.PoisonValue ?? 0,
            FeatureBits = Features.FreePageHint | (config.PoisonValue is null ? 0 : Features.PagePoison) | (config.WaitOnAck ? Features.HintWaitOnAck : 0),
        };
        BalloonDriver = new BalloonDriver(kernel, HintDevice, config.WaitOnAck, hooks, config.HintBlockOrder);
    }

    /// <summary>The virtio-balloon device's free-page-hint part (host side).</summary>
    public FreePageHintDevice HintDevice { get; }

    /// <summary>The guest's balloon driver; runs on its own guest thread beside the vCPUs.</summary>
    public BalloonDriver BalloonDriver { get; }

    public GuestConfig Config { get; }

    public GuestRam Ram { get; }

    public GuestKernel Kernel { get; }

    public GuestMemory Memory => Kernel.Memory;

    public DirtyLog DirtyLog => Kernel.Memory.Log;

    public IReadOnlyList<Workload> Workloads { get; }

    public VmRunState State { get; private set; }

    /// <summary>Every vCPU has finished its warm-up.</summary>
    public bool IsWarm => Workloads.All(w => w.IsWarm);

    public long PageWrites => Workloads.Sum(w => w.PageWrites);

    /// <summary>Errors that halted a vCPU.</summary>
    public IReadOnlyList<string> Crashes
    {
        get
        {
            lock (_gate)
            {
                return [.. _crashes];
            }
        }
    }

    /// <summary>Allocates RAM, boots the kernel and creates each vCPU's workload. Threads start at <see cref="Start"/>.</summary>
    /// <param name="hooks">Mutations and scheduling points for the race fuzzer; null in production.</param>
    public static VirtualMachine Boot(GuestConfig config, TimeProvider? time = null, RaceHooks? hooks = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        hooks ??= RaceHooks.None;
        var ram = GuestRam.Allocate(config.RamBytes);
        try
        {
            var memory = new GuestMemory(ram, new DirtyLog(ram.PageCount, config.DirtyLogMode, config.ClearChunkPages, hooks), hooks);
            bool ab = config.Workload.Kind == WorkloadKind.Ab;
            var kernel = GuestKernel.Boot(memory, new KernelBootOptions
            {
                PoisonValue = config.PoisonValue,
                ReservedFirstPfn = ab ? config.Workload.AbFirstPfn : 0,
                ReservedPages = ab ? config.Workload.AbPages : 0,
            });
            var context = new WorkloadContext(kernel, config.Workload, time ?? TimeProvider.System, config.Vcpus);
            var workloads = Enumerable.Range(0, config.Vcpus).Select(i => Workload.Create(context, i)).ToArray();
            return new VirtualMachine(config, ram, kernel, workloads, hooks);
        }
        catch
        {
            ram.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Rebuilds a VM around RAM that already holds a guest (the target after migration): attaches to the kernel in RAM
    /// and restores each vCPU from its state. Takes ownership of <paramref name="ram"/>.
    /// </summary>
    /// <param name="hint">The migrated free-page-hint device state (status, id, poison value, features), if any.</param>
    public static VirtualMachine Restore(GuestConfig config, GuestRam ram, IReadOnlyList<byte[]> vcpuStates, TimeProvider? time = null,
        (HintStatus Status, uint CommandId, uint PoisonVal, ulong Features)? hint = null, RaceHooks? hooks = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(ram);
        ArgumentNullException.ThrowIfNull(vcpuStates);
        config.Validate();
        if (ram.PageCount != config.PageCount)
        {
            throw new ArgumentException($"RAM has {ram.PageCount} pages, the configuration {config.PageCount}.", nameof(ram));
        }

        if (vcpuStates.Count != config.Vcpus)
        {
            throw new ArgumentException($"Got state for {vcpuStates.Count} vCPUs, the guest has {config.Vcpus}.", nameof(vcpuStates));
        }

        var memory = new GuestMemory(ram, new DirtyLog(ram.PageCount, config.DirtyLogMode, config.ClearChunkPages));
        var kernel = GuestKernel.Attach(memory);
        var context = new WorkloadContext(kernel, config.Workload, time ?? TimeProvider.System, config.Vcpus);
        var workloads = Enumerable.Range(0, config.Vcpus).Select(i => Workload.Restore(context, i, vcpuStates[i])).ToArray();
        var vm = new VirtualMachine(config, ram, kernel, workloads, hooks ?? RaceHooks.None);
        if (hint is var (status, id, poison, features))
        {
            vm.HintDevice.Restore(status, id, poison, features);
        }

        return vm;
    }

    /// <summary>Starts one thread per vCPU.</summary>
    public void Start()
    {
        lock (_gate)
        {
            if (State != VmRunState.Created)
            {
                throw new InvalidOperationException($"Cannot start a VM that is {State}.");
            }

            _live = Workloads.Count + 1;
            _threads = new Thread[Workloads.Count + 1];
            for (int i = 0; i < Workloads.Count; i++)
            {
                int vcpu = i;
                _threads[i] = new Thread(() => RunGuestThread($"vCPU {vcpu}", Workloads[vcpu].Step)) { IsBackground = true, Name = $"vcpu-{vcpu}" };
            }

            // The balloon driver's work item runs on a guest thread of its own (a kernel worker in Linux).
            _threads[^1] = new Thread(() => RunGuestThread("balloon driver", BalloonDriver.Step)) { IsBackground = true, Name = "balloon" };

            State = VmRunState.Running;
        }

        foreach (var t in _threads)
        {
            t.Start();
        }
    }

    /// <summary>
    /// Stops every vCPU between two steps and returns when all are parked. A VM driven by the race fuzzer's scheduler
    /// (never started) stops the scheduled way instead.
    /// </summary>
    public void Pause()
    {
        if (State == VmRunState.Created && _hooks.YieldPoint is not null)
        {
            StopScheduled();
            return;
        }

        lock (_gate)
        {
            if (State != VmRunState.Running)
            {
                throw new InvalidOperationException($"Cannot pause a VM that is {State}.");
            }

            _pauseRequested = true;
            while (_parked < _live)
            {
                Monitor.Wait(_gate);
            }

            State = VmRunState.Paused;
        }

        HintDevice.SetVmRunning(false); // H5: the hint thread applies nothing while the VM is stopped
    }

    public void Resume()
    {
        lock (_gate)
        {
            if (State != VmRunState.Paused)
            {
                throw new InvalidOperationException($"Cannot resume a VM that is {State}.");
            }

            _pauseRequested = false;
            State = VmRunState.Running;
            Monitor.PulseAll(_gate);
        }

        HintDevice.SetVmRunning(true);
    }

    /// <summary>Advances one vCPU by one step, for a VM driven by a scheduler instead of threads.</summary>
    public StepResult StepVcpu(int vcpu) => Scheduled(nameof(StepVcpu), () => Workloads[vcpu].Step());

    /// <summary>Advances the balloon driver by one step, for a VM driven by a scheduler.</summary>
    public StepResult StepBalloonDriver() => Scheduled(nameof(StepBalloonDriver), BalloonDriver.Step);

    /// <summary>
    /// One pass of memory reclaim (Linux's kswapd calling the shrinkers), for a VM driven by a scheduler: the balloon
    /// driver may hand a held block back, which the workloads then reuse.
    /// </summary>
    public StepResult StepReclaim() =>
        Scheduled(nameof(StepReclaim), () => Kernel.Shrinker?.Invoke(0) == true ? StepResult.Progress : StepResult.Idle);

    /// <summary>A scheduler-driven VM was stopped for stop-and-copy: its vCPUs and driver take no more steps.</summary>
    public bool StoppedByScheduler { get; private set; }

    private int _stepsInFlight;

    /// <summary>
    /// One step of a guest thread for a VM driven by a scheduler (never started): nothing once stopped, and counted
    /// while under way, since a step can be parked at a scheduling point when the stop comes.
    /// </summary>
    private StepResult Scheduled(string caller, Func<StepResult> step)
    {
        if (State != VmRunState.Created)
        {
            throw new InvalidOperationException($"{caller} drives a VM whose threads were never started.");
        }

        if (StoppedByScheduler)
        {
            return StepResult.Idle;
        }

        Interlocked.Increment(ref _stepsInFlight);
        try
        {
            return step();
        }
        finally
        {
            Interlocked.Decrement(ref _stepsInFlight);
        }
    }

    /// <summary>
    /// <see cref="Pause"/> for a VM driven by the race fuzzer's scheduler. Stopping takes a moment
    /// (<see cref="RaceHooks.StopLatency"/>: vCPUs notice the request at their next exit, and the guest runs meanwhile),
    /// then no step starts and it waits for the steps under way, as Pause waits for every vCPU to park between two steps.
    /// </summary>
    private void StopScheduled()
    {
        for (int i = 0; i < _hooks.StopLatency; i++)
        {
            _hooks.Preempt();
        }

        StoppedByScheduler = true;
        HintDevice.SetVmRunning(false);
        _hooks.WaitUntil(() => Volatile.Read(ref _stepsInFlight) == 0);
    }

    /// <summary>vCPU state of every vCPU. Only while paused (or never started).</summary>
    public IReadOnlyList<byte[]> SaveVcpuStates()
    {
        if (State is VmRunState.Running)
        {
            throw new InvalidOperationException("vCPU state can only be saved while the VM is paused.");
        }

        return [.. Workloads.Select(w => w.SaveState())];
    }

    /// <summary>Stops the vCPU threads for good.</summary>
    public void Shutdown()
    {
        Thread[] threads;
        lock (_gate)
        {
            if (State == VmRunState.ShutDown)
            {
                return;
            }

            _stopRequested = true;
            Monitor.PulseAll(_gate);
            threads = _threads;
            State = VmRunState.ShutDown;
        }

        foreach (var t in threads)
        {
            t.Join();
        }
    }

    public void Dispose()
    {
        Shutdown();
        Ram.Dispose();
    }

    private void RunGuestThread(string name, Func<StepResult> step)
    {
        while (!Volatile.Read(ref _stopRequested))
        {
            if (Volatile.Read(ref _pauseRequested))
            {
                Park();
                continue;
            }

            StepResult result;
            try
            {
                result = step();
            }
            catch (Exception ex) when (ex is GuestKernelException or GuestOutOfMemoryException or InvalidOperationException or ArgumentException or InvalidDataException)
            {
                Halt(name, ex);
                return;
            }

            if (result == StepResult.Idle)
            {
                Thread.Sleep(1);
            }
        }
    }

    private void Park()
    {
        lock (_gate)
        {
            _parked++;
            Monitor.PulseAll(_gate);
            while (_pauseRequested && !_stopRequested)
            {
                Monitor.Wait(_gate);
            }

            _parked--;
        }
    }

    private void Halt(string name, Exception ex)
    {
        lock (_gate)
        {
            _crashes.Add($"{name} halted: {ex.Message}");
            _live--;
            Monitor.PulseAll(_gate);
        }
    }
}
