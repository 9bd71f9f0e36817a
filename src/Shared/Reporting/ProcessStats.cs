using System.Diagnostics;
using System.Runtime;

namespace Migration.Shared.Reporting;

/// <summary>
/// What a process cost, measured by the process itself when it writes its report: CPU time of all its threads (vCPUs,
/// hint thread, channels, GC) and the high-water mark of its resident memory (VmHWM on Linux).
/// </summary>
public sealed record ProcessStats
{
    public double CpuSeconds { get; init; }

    /// <summary>
    /// CPU time from the start of the migration to the report (boot, warm-up or preallocation excluded).
    /// </summary>
    public double? MigrationCpuSeconds { get; init; }

    /// <summary>
    /// Time the JIT spent compiling, on every thread, from the start of the migration to the report, and how many
    /// methods it compiled then (first compilations and tiered recompilations): a fixed cost of a fresh process that
    /// the CPU per GB of a small migration carries.
    /// </summary>
    public double? MigrationJitMs { get; init; }

    public long? MigrationMethodsJitted { get; init; }

    public long PeakRssBytes { get; init; }

    /// <summary>Resident memory when the migration began (after warm-up, ballooning or reporting).</summary>
    public long? RssAtMigrationStartBytes { get; init; }

    /// <summary>
    /// workstation | server, with concurrent or not: the GC settings the figures were measured under.
    /// </summary>
    public string GcMode { get; init; } = string.Empty;

    public int ProcessorCount { get; init; }

    /// <summary>CPU time of this process so far, in seconds.</summary>
    public static double CpuNow()
    {
        using var self = Process.GetCurrentProcess();
        return self.TotalProcessorTime.TotalSeconds;
    }

    /// <summary>CPU and JIT time of this process so far, to measure a migration from.</summary>
    public static ProcessMark Now()
    {
        using var self = Process.GetCurrentProcess();
        return new ProcessMark(self.TotalProcessorTime.TotalSeconds, JitInfo.GetCompilationTime(),
            JitInfo.GetCompiledMethodCount());
    }

    /// <param name="migrationStart">What <see cref="Now"/> said when the migration began, if known.</param>
    /// <param name="rssAtMigrationStart">The resident memory then, if known.</param>
    public static ProcessStats Capture(ProcessMark? migrationStart = null, long? rssAtMigrationStart = null)
    {
        using var self = Process.GetCurrentProcess();
        double cpu = self.TotalProcessorTime.TotalSeconds;
        return new ProcessStats
        {
            CpuSeconds = cpu,
            MigrationCpuSeconds = cpu - migrationStart?.CpuSeconds,
            MigrationJitMs = migrationStart is { } start
                ? Math.Round((JitInfo.GetCompilationTime() - start.JitTime).TotalMilliseconds, 1)
                : null,
            MigrationMethodsJitted = JitInfo.GetCompiledMethodCount() - migrationStart?.MethodsJitted,
            PeakRssBytes = self.PeakWorkingSet64,
            RssAtMigrationStartBytes = rssAtMigrationStart,
            GcMode = Describe(),
            ProcessorCount = Environment.ProcessorCount,
        };
    }

    /// <summary>The GC mode in words, e.g. "workstation, concurrent".</summary>
    public static string Describe() =>
        (GCSettings.IsServerGC ? "server" : "workstation")
        + (GCSettings.LatencyMode == GCLatencyMode.Batch ? ", non-concurrent" : ", concurrent");
}

/// <summary>A process's CPU seconds, JIT time and methods compiled at one moment (<see cref="ProcessStats.Now"/>).</summary>
public readonly record struct ProcessMark(double CpuSeconds, TimeSpan JitTime, long MethodsJitted);
