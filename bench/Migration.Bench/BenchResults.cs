using System.Runtime.InteropServices;
using Migration.Shared.Reporting;

namespace Migration.Bench;

/// <summary>Everything a benchmark run produced: results.json.</summary>
internal sealed class BenchResults
{
    public MachineInfo Machine { get; set; } = new();

    public bool Quick { get; set; }

    public int Repeat { get; set; }

    /// <summary>The parts run (--only), or null for all of them.</summary>
    public List<string>? Only { get; set; }

    public DateTimeOffset StartedAt { get; set; }

    public DateTimeOffset? FinishedAt { get; set; }

    /// <summary>iperf3 on loopback, before and after the raw page stream.</summary>
    public List<Iperf3Result> Iperf3 { get; set; } = [];

    /// <summary>The raw page stream: random content, no guest activity, hints off.</summary>
    public List<BenchRun> RawStream { get; set; } = [];

    public List<BenchRun> Runs { get; set; } = [];

    /// <summary>Idle guests of growing size, hints off and on (the scale scenario).</summary>
    public List<BenchRun> Scale { get; set; } = [];

    /// <summary>Sizes of the scale scenario this machine could not hold, with the reason.</summary>
    public List<string> ScaleSkipped { get; set; } = [];

    /// <summary>Back-to-back migrations into one long-lived target.</summary>
    public List<SoakRun> Soak { get; set; } = [];

    /// <summary>The balloon scenario's inflate and deflate timings, one per encoding and repeat.</summary>
    public List<BalloonTiming> BalloonTimings { get; set; } = [];

    /// <summary>The balloon scenario's migrations: the guest ballooned and not.</summary>
    public List<BenchRun> BalloonMigrations { get; set; } = [];

    /// <summary>The comparison of hinting, reporting and ballooning (<c>--only compare</c>).</summary>
    public List<BenchRun> Compare { get; set; } = [];

    /// <summary>The guest-side cost of free page reporting on an allocation-heavy load, off and on interleaved.</summary>
    public List<ReportingCostSample> ReportingCost { get; set; } = [];

    /// <summary>What a refault of discarded guest RAM costs on this host (measured with reporting-cost).</summary>
    public RefaultCost? RefaultCost { get; set; }

    /// <summary>The downtime check (<c>--only downtime</c>): guests migrated with the machine quiet and busy.</summary>
    public List<BenchRun> Downtime { get; set; } = [];

    /// <summary>Busy guests against the link, with each convergence method (<c>--only converge</c>).</summary>
    public List<BenchRun> Converge { get; set; } = [];

    /// <summary>The side-by-side comparison with QEMU (<c>--peer qemu</c>), or null.</summary>
    public Peers.PeerResults? Peer { get; set; }

    /// <summary>QEMU's side of the convergence benchmark (<c>--only converge-qemu</c>), or null.</summary>
    public Peers.PeerConvergeResults? ConvergeQemu { get; set; }

    /// <summary>Plain sockets against the page stream (<c>--only floor</c>), or null.</summary>
    public Floor.FloorResults? Floor { get; set; }

    public BenchSummary? Summary { get; set; }
}

/// <summary>The machine and runtime the figures were measured on.</summary>
internal sealed record MachineInfo
{
    public string Cpu { get; init; } = "unknown";

    public int Cores { get; init; }

    public long MemoryBytes { get; init; }

    public string Os { get; init; } = string.Empty;

    public string Runtime { get; init; } = string.Empty;

    /// <summary>GC mode of the benchmark process; each child's own is in its report (process.gcMode).</summary>
    public string GcMode { get; init; } = string.Empty;


    public static MachineInfo Capture()
    {
        string cpu = "unknown";
        long memory = 0;
        if (File.Exists("/proc/cpuinfo"))
        {
            cpu = File.ReadLines("/proc/cpuinfo")
                .FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))
                ?.Split(':', 2)[1].Trim() ?? cpu;
        }

        if (File.Exists("/proc/meminfo"))
        {
            string? line = File.ReadLines("/proc/meminfo")
                .FirstOrDefault(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
            if (line is not null
                && long.TryParse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], out long kb))
            {
                memory = kb * 1024;
            }
        }

        return new MachineInfo
        {
            Cpu = cpu,
            Cores = Environment.ProcessorCount,
            MemoryBytes = memory > 0 ? memory : GC.GetGCMemoryInfo().TotalAvailableMemoryBytes,
            Os = RuntimeInformation.OSDescription,
            Runtime = RuntimeInformation.FrameworkDescription,
            GcMode = ProcessStats.Describe(),
        };
    }

    /// <summary>One line for the reader. The JIT modes are the two processes' (their project files set them).</summary>
    public string Describe() =>
        $"{Cpu}, {Cores} cores, {MemoryBytes / (1L << 30)} GiB RAM; {Os}; {Runtime}; GC {GcMode}; " +
        "JIT tiered in the source, optimised at first call in the target";
}
