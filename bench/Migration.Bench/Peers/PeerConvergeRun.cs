using System.Globalization;
using System.Text.Json.Serialization;

namespace Migration.Bench.Peers;

/// <summary>
/// The busy guest of the convergence benchmark: its RAM, and the dirtying program's working set, asked rate
/// (MB/s of 4 KiB pages, 1 MB = 1e6 bytes; 0 = as fast as it can) and bytes written per page (8 to 4096).
/// </summary>
internal sealed record DirtyWork(long RamBytes, int WorkingSetMiB, double RateMBps, int BytesPerPage = 8)
{
    /// <summary>The kernel command line's parameters for the guest's init.</summary>
    public string KernelArgs => string.Create(CultureInfo.InvariantCulture,
        $"dirty_mb={WorkingSetMiB} dirty_rate={RateMBps:0.###} dirty_bytes={BytesPerPage}");
}

/// <summary>
/// One convergence migration's settings: the emulated link (QEMU's <c>max-bandwidth</c>, bytes/s), the downtime
/// limit, auto-converge and its throttle (QEMU's defaults: 20% at first, +10% a step, at most 99%), and how long the
/// run may take before it is cancelled and reported as not completed.
/// </summary>
internal sealed record ConvergeSettings(string LinkName, long LinkBytesPerSecond, bool AutoConverge)
{
    public int DowntimeLimitMs { get; init; } = 300;

    public int ThrottleInitial { get; init; } = 20;

    public int ThrottleIncrement { get; init; } = 10;

    public int MaxThrottle { get; init; } = 99;

    /// <summary>QEMU's <c>cpu-throttle-tailslow</c>: smaller steps near the end of a round.</summary>
    public bool TailSlow { get; init; }

    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(90);

    /// <summary>The guest's rate is measured this long just before the migration (unmigrated)...</summary>
    public TimeSpan Before { get; init; } = TimeSpan.FromSeconds(6);

    /// <summary>...and this long after it, on the destination (on the source when it did not complete).</summary>
    public TimeSpan After { get; init; } = TimeSpan.FromSeconds(6);

    public TimeSpan PollInterval { get; init; } = TimeSpan.FromMilliseconds(250);

    /// <summary>The link in MB/s (1e6 bytes), the unit of the guest's rate.</summary>
    public double LinkMBps => LinkBytesPerSecond / 1e6;

    public static long Gbit(double gbit) => (long)(gbit * 1e9 / 8);
}

/// <summary>
/// One <c>query-migrate</c> poll of a convergence run: milliseconds since <c>migrate</c>, status, auto-converge's
/// throttle, dirty bitmap syncs (rounds), RAM sent and left, QEMU's dirty page rate (pages/s) and link rate, and the
/// guest's last reported rate (pages/s) and share of its time it ran at that moment.
/// </summary>
internal sealed record ConvergePoll(double Ms, string Status, int ThrottlePercent, long DirtySyncCount,
    long TransferredBytes, long RemainingBytes, long DirtyPagesRate, double Mbps, long? ExpectedDowntimeMs,
    double? GuestPps, double? GuestRun);

/// <summary>One QEMU migration of the busy guest, with or without auto-converge (<c>bench --only converge-qemu</c>).</summary>
internal sealed class PeerConvergeRun
{
    public string Engine { get; init; } = PeerRun.Qemu;

    public required string Link { get; init; }

    public required long LinkBytesPerSecond { get; init; }

    public required bool AutoConverge { get; init; }

    public required int Repeat { get; init; }

    public int DowntimeLimitMs { get; init; }

    /// <summary>cpu-throttle-initial / -increment, max-cpu-throttle, cpu-throttle-tailslow as set.</summary>
    public string Throttle { get; init; } = string.Empty;

    public int WorkingSetMiB { get; init; }

    public long RamBytes { get; init; }

    /// <summary>The rate the guest was asked for (MB/s; 0 = as fast as it can).</summary>
    public double AskedMBps { get; init; }

    /// <summary>The guest's rate just before the migration (unmigrated), MB/s: what the run really asked of QEMU.</summary>
    public double? AchievedMBps { get; set; }

    /// <summary><see cref="AchievedMBps"/> over the link's rate: the "x times the link" of the row.</summary>
    [JsonIgnore]
    public double? TimesLink => AchievedMBps / (LinkBytesPerSecond / 1e6);

    /// <summary>QEMU's final status: completed, or "did not complete" runs' cancelled (or failed).</summary>
    public string Status { get; set; } = "none";

    public bool Completed { get; set; }

    public double TotalMs { get; set; }

    /// <summary>QEMU's own downtime (source stop to the last byte sent); completed runs only.</summary>
    public double? DowntimeMs { get; set; }

    /// <summary>The source's STOP event to the destination's RESUME event.</summary>
    public double? StopToResumeMs { get; set; }

    /// <summary>RAM bytes QEMU sent (<c>ram.transferred</c>).</summary>
    public long BytesTransferred { get; set; }

    /// <summary>Dirty bitmap syncs (<c>ram.dirty-sync-count</c>): the rounds.</summary>
    public long DirtySyncCount { get; set; }

    /// <summary>The highest <c>cpu-throttle-percentage</c> polled.</summary>
    public int MaxThrottlePercent { get; set; }

    /// <summary>The guest's pages/s before the migration (unmigrated, on the source).</summary>
    public double? GuestBeforePps { get; set; }

    /// <summary>The guest's pages/s while the migration ran (on the source, throttled or not).</summary>
    public double? GuestDuringPps { get; set; }

    /// <summary>The guest's pages/s after: on the destination, or on the source when it did not complete.</summary>
    public double? GuestAfterPps { get; set; }

    /// <summary>"destination" or "source": where <see cref="GuestAfterPps"/> was measured.</summary>
    public string? AfterOn { get; set; }

    /// <summary>1 - during / before: the share of its throughput the guest lost while it was migrated.</summary>
    [JsonIgnore]
    public double? ThroughputLost => GuestBeforePps > 0 && GuestDuringPps is double d ? 1 - (d / GuestBeforePps) : null;

    /// <summary>
    /// Completed runs: the guest's rate lines kept coming on the destination's serial port after it resumed, its
    /// kernel printed no crash there, and its working set held what it last wrote. Null when not checked.
    /// </summary>
    public bool? DestinationRuns { get; set; }

    public string? GuestCrash { get; set; }

    /// <summary>
    /// Pages of the working set the guest found stale on the destination (it checks every page against its last
    /// write once a second): writes the migration lost. Null when not checked.
    /// </summary>
    public long? StalePages { get; set; }

    /// <summary>The guest's first report of a stale page on the destination, or null.</summary>
    public string? FirstStale { get; set; }

    public double SourceCpuSeconds { get; set; }

    public double TargetCpuSeconds { get; set; }

    public double LoadAverage { get; set; }

    /// <summary>What the row leaves out and why (QEMU's dirty-limit here), for the table.</summary>
    public List<string> Notes { get; set; } = [];

    public List<ConvergePoll> Polls { get; set; } = [];

    public string? Error { get; set; }

    public string? Log { get; set; }

    /// <summary>No error and, when it completed, the guest ran on at the destination.</summary>
    [JsonIgnore]
    public bool Ok => Error is null && DestinationRuns != false;

    [JsonIgnore]
    public string Label => string.Create(CultureInfo.InvariantCulture,
        $"{Link} ac-{(AutoConverge ? "on" : "off")} {AskedMBps:0.#}MB/s #{Repeat}");
}

/// <summary>QEMU's side of the convergence benchmark: where QEMU came from, or why it did not run, and its runs.</summary>
internal sealed class PeerConvergeResults
{
    public string? QemuVersion { get; set; }

    /// <summary>Why QEMU or its busy guest could not run, or null.</summary>
    public string? Unavailable { get; set; }

    /// <summary>Why this QEMU's figures are not valid for a busy guest under TCG (before 9.0), or null.</summary>
    public string? LostWrites { get; set; }

    /// <summary>Why QEMU's dirty-limit rows are not there (they never silently are not).</summary>
    public string? DirtyLimit { get; set; }

    public List<PeerConvergeRun> Runs { get; set; } = [];
}
