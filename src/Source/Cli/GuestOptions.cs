using System.CommandLine;
using Migration.Shared.Balloon;
using Migration.Shared.Cli;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;

namespace Migration.Source.Cli;

/// <summary>The flags that describe the guest to boot, with their defaults read from the guest records.</summary>
internal sealed class GuestOptions
{
    private static readonly GuestConfig Guest = new();
    private static readonly WorkloadOptions Load = new();
    private static readonly BalloonOptions Balloon = new();

    public Option<ByteSize> Ram { get; } = CliOptions.Size("--ram", "Guest RAM (e.g. 1GiB, 512MiB)", Guest.RamBytes);

    public Option<int> Vcpus { get; } =
        CliOptions.WholeNumber("--vcpus", "vCPUs", Guest.Vcpus, 1, GuestConfig.MaxVcpus);

    public Option<WorkloadKind> Workload { get; } = CliOptions.Choice("--workload", "What the guest runs", Load.Kind);

    public Option<DirtyLogMode> DirtyLog { get; } =
        CliOptions.Choice("--dirty-log", "Dirty tracking, as KVM has it", Guest.DirtyLogMode);

    public Option<byte?> Poison { get; } =
        CliOptions.Poison("--poison", "Page poisoning byte (e.g. 0xaa) or off", Guest.PoisonValue);

    public Option<OnOff> InitOnAlloc { get; } = CliOptions.Switch("--init-on-alloc",
        "The guest zeroes every page it allocates (Linux's init_on_alloc=1, Debian's default)", Guest.InitOnAlloc);

    public Option<ulong> Seed { get; } = CliOptions.Seed("--seed", "Workload seed", Load.Seed);

    public Option<OnOff> WaitOnAck { get; } = CliOptions.Switch("--wait-on-ack",
        "Guest driver waits for the device before reusing a hinted block", Guest.WaitOnAck);

    public Option<int> AbMib { get; } =
        CliOptions.WholeNumber("--ab-mib", "ab: MiB incremented at 1 MiB", Load.AbMib, 1, 1 << 20);

    public Option<int> PageFaultMib { get; } = CliOptions.WholeNumber("--page-fault-mib",
        "pagefault: MiB each vCPU maps in 2 MiB blocks, writes and unmaps per loop", Load.PageFaultRegionMib, 1,
        1 << 20);

    public Option<ByteRate?> BusyRate { get; } = CliOptions.Rate("--busy-dirty-rate",
        "busy: page writes per second over all vCPUs, as a rate (e.g. 100MiB/s)",
        Load.BusyDirtyPagesPerSecond * PageGeometry.PageSize);

    public Option<double> BusySet { get; } =
        CliOptions.Number("--busy-working-set", "busy: share of RAM allocated", Load.BusyWorkingSetShare, 0, 1);

    public Option<double> BusyStale { get; } = CliOptions.Number("--busy-stale-share",
        "busy: share of RAM earlier jobs filled and freed before the load (stale free memory)",
        Load.BusyStaleShare, 0, 1);

    public Option<double> BusyHot { get; } = CliOptions.Number("--busy-hot-set",
        "busy: share of the working set that takes 90% of the writes", Load.BusyHotSetShare, 0, 1);

    public Option<double> MemhogShare { get; } =
        CliOptions.Number("--memhog-share", "memhog: share of RAM filled then freed", Load.MemhogShare, 0, 1);

    public Option<double> PageCache { get; } = CliOptions.Number("--page-cache-share",
        "idle, memhog: share of RAM the kernel and page cache keep in use", Load.PageCacheShare, 0, 1);

    public Option<double> IdleRate { get; } = CliOptions.Number("--idle-dirty-pages", "idle: pages written per second",
        Load.IdleDirtyPagesPerSecond, 0, 1e9);

    public Option<BalloonEncoding> BalloonEncoding { get; } = CliOptions.Choice("--balloon-encoding",
        "Inflate/deflate buffers: the spec's page numbers, Liang Li's bitmap or Wei Wang's chunks", Balloon.Encoding);

    public Option<OnOff> DeflateOnOom { get; } = CliOptions.Switch("--deflate-on-oom",
        "Balloon feature DEFLATE_ON_OOM: the guest takes 1 MiB back per failed allocation", Balloon.DeflateOnOom);

    public Option<OnOff> MustTellHost { get; } = CliOptions.Switch("--must-tell-host",
        "Balloon feature MUST_TELL_HOST: deflated pages are reused only after the device acknowledged them",
        Balloon.MustTellHost);

    public Option<OnOff> BalloonEvents { get; } = CliOptions.Switch("--balloon-events",
        "Balloon events queue (ours): the guest reports memory pressure and failed inflates", Balloon.Events);

    public Option<OnOff> BalloonStats { get; } = CliOptions.Switch("--balloon-stats",
        "Balloon statistics queue: the guest reports its memory counters when asked", Balloon.Stats);

    public Option<OnOff> Reporting { get; } = CliOptions.Switch("--balloon-reporting",
        "Free page reporting: the guest reports free blocks, the host discards them", Balloon.Reporting);

    public Option<int> ReportingOrder { get; } = CliOptions.WholeNumber("--reporting-order",
        "Free page reporting: smallest block reported, as a buddy order (9: 2 MiB)", Balloon.ReportingOrder, 0,
        Shared.Guest.Kernel.GuestKernel.MaxOrder);

    public Option<int> ReportingDelay { get; } = CliOptions.WholeNumber("--reporting-delay-ms",
        "Free page reporting: wait after a free before a pass, in ms", Balloon.ReportingDelayMs, 0, 600_000);

    public Option<int> ReportingBudget { get; } = CliOptions.WholeNumber("--reporting-budget-divisor",
        "Free page reporting: a pass reports about 1/N of each free list (1: everything at once)",
        Balloon.ReportingBudgetDivisor, 1, 1024);

    public IEnumerable<Option> All =>
    [
        Ram, Vcpus, Workload, DirtyLog, Poison, Seed, WaitOnAck, AbMib, PageFaultMib, BusyRate, BusySet, BusyStale,
        BusyHot, MemhogShare, PageCache, IdleRate, BalloonEncoding, DeflateOnOom, MustTellHost, BalloonEvents,
        BalloonStats, Reporting, ReportingOrder, ReportingDelay, ReportingBudget, InitOnAlloc,
    ];

    /// <summary>
    /// The guest the parsed flags describe; throws <see cref="ArgumentException"/> naming a bad combination.
    /// </summary>
    public GuestConfig Bind(ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(parse);
        var guest = Guest with
        {
            RamBytes = parse.GetValue(Ram).Bytes,
            Vcpus = parse.GetValue(Vcpus),
            DirtyLogMode = parse.GetValue(DirtyLog),
            WaitOnAck = parse.GetValue(WaitOnAck) == OnOff.On,
            PoisonValue = parse.GetValue(Poison),
            InitOnAlloc = parse.GetValue(InitOnAlloc) == OnOff.On,
            Balloon = Balloon with
            {
                Encoding = parse.GetValue(BalloonEncoding),
                DeflateOnOom = parse.GetValue(DeflateOnOom) == OnOff.On,
                MustTellHost = parse.GetValue(MustTellHost) == OnOff.On,
                Events = parse.GetValue(BalloonEvents) == OnOff.On,
                Stats = parse.GetValue(BalloonStats) == OnOff.On,
                Reporting = parse.GetValue(Reporting) == OnOff.On,
                ReportingOrder = parse.GetValue(ReportingOrder),
                ReportingDelayMs = parse.GetValue(ReportingDelay),
                ReportingBudgetDivisor = parse.GetValue(ReportingBudget),
            },
            Workload = Load with
            {
                Kind = parse.GetValue(Workload),
                Seed = parse.GetValue(Seed),
                AbMib = parse.GetValue(AbMib),
                PageFaultRegionMib = parse.GetValue(PageFaultMib),
                BusyDirtyPagesPerSecond = (parse.GetValue(BusyRate)?.BytesPerSecond ?? 0) / PageGeometry.PageSize,
                BusyWorkingSetShare = parse.GetValue(BusySet),
                BusyStaleShare = parse.GetValue(BusyStale),
                BusyHotSetShare = parse.GetValue(BusyHot),
                MemhogShare = parse.GetValue(MemhogShare),
                IdleDirtyPagesPerSecond = parse.GetValue(IdleRate),
                PageCacheShare = parse.GetValue(PageCache),
            },
        };
        guest.Validate();
        return guest;
    }
}
