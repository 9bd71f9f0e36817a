using Migration.Shared.Balloon;
using Migration.Shared.Concurrency;
using Migration.Shared.Devices;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Guest;

namespace Migration.Shared.Machine;

public enum VmRunState
{
    /// <summary>Booted or restored; guest threads not started.</summary>
    Created,
    Running,
    Paused,
    ShutDown,
}

/// <summary>
/// A simulated VM: guest RAM with its in-RAM kernel, the dirty log, its devices (the virtio-balloon's free page
/// hinting), and guest threads: one per vCPU running the workload, one for the balloon driver.
/// </summary>
/// <remarks>
/// <see cref="Pause"/> returns once every guest thread is parked between two steps, so guest memory is quiescent (the
/// "stopped VM" of stop-and-copy). A guest thread whose step throws is halted and its error kept in
/// <see cref="Crashes"/>, like a guest panic; the others go on.
/// </remarks>
public sealed partial class VirtualMachine : IDisposable
{
    private readonly object _gate = new();
    private readonly IGuestThreadHost _threads;

    private readonly bool _runsInflateDriver;

    private VirtualMachine(GuestConfig config, GuestRam ram, GuestKernel kernel, Workload[] workloads,
        VcpuThrottle throttle, GuestSeams seams, TimeProvider time)
    {
        Config = config;
        Ram = ram;
        Kernel = kernel;
        Workloads = workloads;
        Throttle = throttle;
        Scheduling = seams.Scheduling;
        _threads = seams.ThreadHost();
        HintDevice = new FreePageHintDevice(ram.PageCount, FreePageHintDevice.DefaultQueueCapacity, seams.Scheduling,
            seams.HintDefences, seams.DeviceThreads)
        {
            PoisonVal = config.PoisonValue ?? 0,
            FeatureBits = NegotiatedBalloonFeatures(config),
            ConfigChanged = _threads.Wake,
        };
        BalloonDriver = new BalloonDriver(kernel, HintDevice, config.WaitOnAck, config.HintBlockOrder, seams.Scheduling,
            seams.BalloonInitialisesOnRelease);
        Balloon = new BalloonDevice(ram, NegotiatedBalloonFeatures(config), BalloonDevice.DefaultQueueCapacity,
            seams.Scheduling, seams.DeviceThreads, seams.BalloonDefences, time)
        {
            StoreObserver = seams.StoreObserver,
            GuestNotify = _threads.Wake,
        };
        InflateDriver = new BalloonInflateDriver(kernel, Balloon, time, seams.Scheduling, seams.BalloonDefences);
        _runsInflateDriver = seams.RunsInflateDriver;
        if (config.Balloon.Reporting)
        {
            Balloon.EnableReporting(config.Balloon.ReportingOrder, config.PoisonValue ?? 0,
                kernel.IsFreeBlock);
            ReportingDriver = new PageReportingDriver(kernel, Balloon, config.Balloon, time, seams.BalloonDefences);
        }
    }

    /// <summary>The guest's free page reporting, when negotiated; runs on its own guest thread.</summary>
    public PageReportingDriver? ReportingDriver { get; }

    /// <summary>The virtio-balloon device's inflate/deflate part (host side): target, actual, held pages.</summary>
    public BalloonDevice Balloon { get; }

    /// <summary>The guest's inflate/deflate driver; runs on its own guest thread.</summary>
    public BalloonInflateDriver InflateDriver { get; }

    /// <summary>The virtio-balloon device's free-page-hint part (host side).</summary>
    public FreePageHintDevice HintDevice { get; }

    /// <summary>The guest's balloon driver; runs on its own guest thread beside the vCPUs.</summary>
    public BalloonDriver BalloonDriver { get; }

    /// <summary>The devices that take part in a migration of this VM (QEMU's precopy notifier list).</summary>
    public IReadOnlyList<IPrecopyParticipant> PrecopyParticipants => [HintDevice, Balloon];

    public GuestConfig Config { get; }

    public GuestRam Ram { get; }

    public GuestKernel Kernel { get; }

    public GuestMemory Memory => Kernel.Memory;

    public DirtyLog DirtyLog => Kernel.Memory.Log;

    public IReadOnlyList<Workload> Workloads { get; }

    /// <summary>
    /// The share of each vCPU's time the host takes away (auto-converge, a dirty-rate ceiling); none outside a
    /// migration.
    /// </summary>
    public VcpuThrottle Throttle { get; }

    /// <summary>Steps that did work, summed over the vCPUs: the guest's throughput, which a throttle costs.</summary>
    public long GuestOperations => Workloads.Sum(w => w.Operations);

    /// <summary>The guest threads: one per vCPU, then the balloon driver's (hinting), then its inflate/deflate one.</summary>
    /// <summary>
    /// Starts spare OS threads for as many guest threads as a guest of <paramref name="config"/> runs (its vCPUs and
    /// device drivers), so that a later <see cref="Start"/> hands them their loops rather than starting threads.
    /// </summary>
    public static void ReserveThreads(GuestConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        SpareThreads.Reserve(config.Vcpus + 3); // + the balloon driver, the inflate driver, page reporting
    }

    public IReadOnlyList<GuestThread> GuestThreads =>
    [
        .. Workloads.Select((w, i) => new GuestThread($"vcpu{i}", w.CountedStep, Vcpu: Throttle[i])),
        new GuestThread("balloon driver", BalloonDriver.Step, BalloonDriver.IdleFor),
        .. _runsInflateDriver
            ? [new GuestThread("balloon inflate", InflateDriver.Step, InflateDriver.IdleFor)]
            : Array.Empty<GuestThread>(),
        .. ReportingDriver is { } reporting
            ? [new GuestThread("page reporting", reporting.Step, reporting.IdleFor)]
            : Array.Empty<GuestThread>(),
    ];

    public VmRunState State { get; private set; }

    /// <summary>Every vCPU has finished its warm-up.</summary>
    public bool IsWarm => Workloads.All(w => w.IsWarm);

    public long PageWrites => Workloads.Sum(w => w.PageWrites);

    /// <summary>Errors that halted a guest thread.</summary>
    public IReadOnlyList<string> Crashes => _threads.Crashes;

    /// <summary>The scheduling points this VM's components use (none in production).</summary>
    internal SchedulingPoints Scheduling { get; }

    /// <summary>
    /// Allocates RAM, boots the kernel and creates each vCPU's workload. Threads start at <see cref="Start"/>.
    /// </summary>
    public static VirtualMachine Boot(GuestConfig config, TimeProvider? time = null) =>
        Boot(config, time, GuestSeams.Production);

    internal static VirtualMachine Boot(GuestConfig config, TimeProvider? time, GuestSeams seams)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(seams);
        config.Validate();
        var ram = GuestRam.Allocate(config.RamBytes);
        try
        {
            var log = new DirtyLog(ram.PageCount, config.DirtyLogMode, config.ClearChunkPages, seams.Scheduling,
                seams.HotPaths, seams.SyncObserver);
            var memory = new GuestMemory(ram, log, seams.Scheduling, seams.HotPaths, seams.StoreObserver);
            bool ab = config.Workload.Kind == WorkloadKind.Ab;
            var kernel = GuestKernel.Boot(memory, new KernelBootOptions
            {
                PoisonValue = config.PoisonValue,
                InitOnAlloc = config.InitOnAlloc,
                ReservedFirstPfn = ab ? WorkloadOptions.AbFirstPfn : 0,
                ReservedPages = ab ? config.Workload.AbPages : 0,
            });
            var throttle = new VcpuThrottle(config.Vcpus, time ?? TimeProvider.System);
            var context = new WorkloadContext(kernel, config.Workload, time ?? TimeProvider.System, config.Vcpus)
            {
                Throttle = throttle,
            };
            var workloads = Enumerable.Range(0, config.Vcpus).Select(i => Workload.Create(context, i)).ToArray();
            return new VirtualMachine(config, ram, kernel, workloads, throttle, seams, time ?? TimeProvider.System);
        }
        catch
        {
            ram.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Rebuilds a VM around RAM that already holds a guest (the target after migration): attaches to the kernel in RAM,
    /// restores each vCPU from its state and the devices from their sections. Takes ownership of <paramref name="ram"/>.
    /// </summary>
    /// <param name="devices">
    /// The sections <see cref="SaveDevices"/> wrote on the source. Every device of this machine needs its section; an
    /// unknown section, a second copy of one, or one its device cannot read throws <see cref="InvalidDataException"/>
    /// naming it, before any device is built.
    /// </param>
    public static VirtualMachine Restore(GuestConfig config, GuestRam ram, IReadOnlyList<byte[]> vcpuStates,
        IReadOnlyList<DeviceSection> devices, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        return Restore(config, ram, vcpuStates, time, devices, GuestSeams.Production);
    }

    internal static VirtualMachine Restore(GuestConfig config, GuestRam ram, IReadOnlyList<byte[]> vcpuStates,
        TimeProvider? time, IReadOnlyList<DeviceSection> devices, GuestSeams seams)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(devices);
        return Restore(config, ram, vcpuStates, time, ReadSections(config, devices), seams);
    }

    /// <summary>Rebuilds a VM with power-on devices (no migrated device state): tests of the guest alone.</summary>
    public static VirtualMachine Restore(GuestConfig config, GuestRam ram, IReadOnlyList<byte[]> vcpuStates,
        TimeProvider? time = null) =>
        Restore(config, ram, vcpuStates, time, balloon: null, GuestSeams.Production);

    internal static VirtualMachine Restore(GuestConfig config, GuestRam ram, IReadOnlyList<byte[]> vcpuStates,
        TimeProvider? time, BalloonState? balloon) =>
        Restore(config, ram, vcpuStates, time, balloon, GuestSeams.Production);

    internal static VirtualMachine Restore(GuestConfig config, GuestRam ram, IReadOnlyList<byte[]> vcpuStates,
        TimeProvider? time, BalloonState? balloon, GuestSeams seams)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(ram);
        ArgumentNullException.ThrowIfNull(vcpuStates);
        ArgumentNullException.ThrowIfNull(seams);
        config.Validate();
        if (ram.PageCount != config.PageCount)
        {
            throw new ArgumentException(
                $"RAM has {ram.PageCount} pages, the configuration {config.PageCount}.", nameof(ram));
        }

        if (vcpuStates.Count != config.Vcpus)
        {
            throw new ArgumentException($"Got state for {vcpuStates.Count} vCPUs, the guest has {config.Vcpus}.",
                nameof(vcpuStates));
        }

        if (balloon is not null)
        {
            CheckBalloonState(config, balloon);
        }

        var log = new DirtyLog(ram.PageCount, config.DirtyLogMode, config.ClearChunkPages);
        var kernel = GuestKernel.Attach(new GuestMemory(ram, log));
        var throttle = new VcpuThrottle(config.Vcpus, time ?? TimeProvider.System);
        var context = new WorkloadContext(kernel, config.Workload, time ?? TimeProvider.System, config.Vcpus)
        {
            Throttle = throttle,
        };
        var workloads = Enumerable.Range(0, config.Vcpus)
            .Select(i => Workload.Restore(context, i, vcpuStates[i]))
            .ToArray();
        if (balloon is not null)
        {
            CheckHeldPages(kernel, balloon.Held);
        }

        var vm = new VirtualMachine(config, ram, kernel, workloads, throttle, seams, time ?? TimeProvider.System);
        if (balloon is not null)
        {
            vm.HintDevice.Restore(balloon.HintStatus, balloon.HintCommandId);
            vm.Balloon.Restore(balloon.TargetPages, balloon.ActualPages, balloon.Held);
            vm.Balloon.SetStatsPolling(balloon.StatsPollingSeconds);
            vm.Balloon.RestoreDiscarded(balloon.Discarded);
            vm.InflateDriver.ReconcileWithDevice();
        }

        return vm;
    }

    /// <summary>Starts the guest threads.</summary>
    public void Start()
    {
        lock (_gate)
        {
            if (State != VmRunState.Created)
            {
                throw new InvalidOperationException($"Cannot start a VM that is {State}.");
            }

            State = VmRunState.Running;
        }

        Balloon.Start();
        _threads.Start(GuestThreads);
    }

    /// <summary>Stops every guest thread between two steps and returns when all are parked.</summary>
    public void Pause()
    {
        lock (_gate)
        {
            if (State != VmRunState.Running)
            {
                throw new InvalidOperationException($"Cannot pause a VM that is {State}.");
            }

            State = VmRunState.Paused;
        }

        _threads.Pause();
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

            State = VmRunState.Running;
        }

        HintDevice.SetVmRunning(true);
        _threads.Resume();
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

    /// <summary>Stops the guest threads for good.</summary>
    public void Shutdown()
    {
        bool started;
        lock (_gate)
        {
            if (State == VmRunState.ShutDown)
            {
                return;
            }

            started = State != VmRunState.Created;
            State = VmRunState.ShutDown;
        }

        if (started)
        {
            _threads.Shutdown();
            Balloon.StopStatsPolling();
            Balloon.Stop();
        }
    }

    public void Dispose()
    {
        Shutdown();
        Ram.Dispose();
    }
}
