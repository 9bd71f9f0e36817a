using System.Text.Json;
using System.Text.Json.Serialization;
using Migration.Shared.Balloon;
using Migration.Shared.Devices;
using Migration.Shared.Guest;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;

namespace Migration.Shared.Reporting;

/// <summary>
/// The migration report (<c>--report FILE</c>): the contract for scripts, serialised as camelCase JSON. Every figure
/// in it was measured during the run it describes.
/// </summary>
public sealed class MigrationReport
{
    public static readonly JsonSerializerOptions JsonOptions = new(JsonSerializerDefaults.Web)
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>completed | failed | cancelled | unknown.</summary>
    public MigrationStatus Status { get; set; } = MigrationStatus.Failed;

    public bool Verified { get; set; }

    public string? Error { get; set; }

    public string? MigrationId { get; set; }

    /// <summary>How the handover was settled when the Complete reply did not arrive; null when it did.</summary>
    public string? Handover { get; set; }

    public Dictionary<string, object?> Config { get; set; } = [];

    public GuestSection Guest { get; set; } = new();

    public TimingSection Timing { get; set; } = new();

    public TransferSection Transfer { get; set; } = new();

    public List<RoundSection> Rounds { get; set; } = [];

    /// <summary>Auto-converge or the dirty limit, and what they cost the guest.</summary>
    public ConvergenceSection Convergence { get; set; } = new();

    public VerificationSection Verification { get; set; } = new();

    /// <summary>Free page hinting; null when hints were off.</summary>
    public HintStats? Hints { get; set; }

    /// <summary>The balloon's inflate/deflate side: target, actual, held pages, what it kept off the wire.</summary>
    public BalloonMigrationStats? Balloon { get; set; }

    /// <summary>Free page reporting, when the guest has it.</summary>
    public PageReportingMigrationStats? Reporting { get; set; }

    /// <summary>CPU time and peak RSS of the process that wrote the report, taken as it wrote it.</summary>
    public ProcessStats? Process { get; set; }

    /// <summary>
    /// CPU seconds of the guest's threads from boot to the end of the migration: the vCPUs summed, then each driver
    /// and device thread by name (what a mechanism costs the guest and the host). Linux only.
    /// </summary>
    public Dictionary<string, double>? GuestThreadCpuSeconds { get; set; }

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    public static MigrationReport FromJson(string json) =>
        JsonSerializer.Deserialize<MigrationReport>(json, JsonOptions)
            ?? throw new InvalidDataException("Empty report.");

    /// <summary>
    /// Takes a participant's statistics records as its sections, serialised as the device keeps them, and the pages
    /// each kept off the wire into <see cref="Transfer"/>.
    /// </summary>
    /// <exception cref="ArgumentException">A record the report has no section for.</exception>
    public void Add(IEnumerable<IMigrationStats> sections)
    {
        ArgumentNullException.ThrowIfNull(sections);
        foreach (var section in sections)
        {
            switch (section)
            {
                case HintStats hints:
                    Hints = hints;
                    Transfer.PagesSkippedByHints = hints.PagesCleared;
                    break;
                case BalloonMigrationStats balloon:
                    Balloon = balloon;
                    Transfer.PagesSkippedAsBallooned = balloon.PagesSkipped;
                    break;
                case PageReportingMigrationStats reporting:
                    Reporting = reporting;
                    Transfer.PagesSkippedAsDiscarded = reporting.PagesSkipped;
                    break;
                default:
                    throw new ArgumentException($"the report has no section for {section.GetType().Name}",
                        nameof(sections));
            }
        }
    }

    public sealed class GuestSection
    {
        /// <summary>
        /// The section as far as the configuration tells (page counts are filled in at stop-and-copy).
        /// </summary>
        public static GuestSection Of(GuestConfig config)
        {
            ArgumentNullException.ThrowIfNull(config);
            return new GuestSection
            {
                RamBytes = config.RamBytes,
                PageSize = PageGeometry.PageSize,
                Workload = config.Workload.Kind.ToString().ToLowerInvariant(),
                Vcpus = config.Vcpus,
            };
        }

        public long RamBytes { get; set; }

        public int PageSize { get; set; }

        public string Workload { get; set; } = string.Empty;

        public int Vcpus { get; set; }

        public long InUsePages { get; set; }

        public long FreePages { get; set; }
    }

    public sealed class TimingSection
    {
        public double TotalMs { get; set; }

        public double SetupMs { get; set; }

        public double DowntimeMs { get; set; }

        /// <summary>The downtime limit the migration ran under (the estimate had to fit it before the stop).</summary>
        public double DowntimeLimitMs { get; set; }

        public double ExpectedDowntimeMs { get; set; }

        /// <summary>
        /// The estimate precopy stopped on, by phase: finalSync, pages (what was left at the rate of the last round),
        /// and the rehearsed saveState, closeStreams and complete (the round trip with the target's rebuild and
        /// resume of a guest of the same shape; the costliest of the latest three rehearsals), and spread (how far those
        /// rehearsals disagreed, added for a machine whose load comes and goes). The phases add up to the estimate.
        /// </summary>
        public Dictionary<string, double> ExpectedDowntimePhasesMs { get; set; } = [];

        /// <summary>
        /// Where the downtime went, in order: pause (vCPUs parked), finalSync, finalSend (last pages written and every
        /// stream closed and acknowledged), saveState (device and vCPU state and their digest), sourceDigests, then the
        /// target's restore, compare, selfCheck, resume and other, and rpc (the Complete round trip minus the target's
        /// own work). The phases are consecutive and add up to <see cref="DowntimeMs"/>.
        /// </summary>
        public Dictionary<string, double> DowntimePhasesMs { get; set; } = [];

        /// <summary>
        /// Where setup went: begin (connect and the Begin call), openChannels, startLogging, setupSync.
        /// </summary>
        public Dictionary<string, double> SetupPhasesMs { get; set; } = [];

        /// <summary>
        /// After round 0, before its first decision: how long precopy waited for the switchover's first rehearsals
        /// (the uncounted warm-up that ran beside round 0, then the counted ones). 0 without rehearsals.
        /// </summary>
        public double FirstRehearsalsMs { get; set; }

        /// <summary>
        /// Resume-first switchover only: the verification that followed the target's resume while the source stayed
        /// paused and the target held the guest's outputs: freeMap, digests and selfCheck on the stopped source, the
        /// target's compare, heldOutputs (target resume to its decision) and rpc. Empty when verified in the downtime.
        /// </summary>
        public Dictionary<string, double> AfterResumePhasesMs { get; set; } = [];
    }

    public sealed class TransferSection
    {
        public long BytesOnWire { get; set; }

        public long PagesNormal { get; set; }

        public long PagesZero { get; set; }

        public long PagesCompressed { get; set; }

        /// <summary>Pages sent as a delta against the copy the target held (delta cache hits).</summary>
        public long PagesDelta { get; set; }


        /// <summary>Migration-bitmap bits cleared by free-page hints: page sends the hints saved.</summary>
        public long PagesSkippedByHints { get; set; }

        /// <summary>Migration-bitmap bits cleared because the balloon held the page: discarded, never sent.</summary>
        public long PagesSkippedAsBallooned { get; set; }

        /// <summary>
        /// Migration-bitmap bits cleared because free page reporting had discarded the page and nothing was stored to
        /// it since: zero on both sides, never scanned nor sent.
        /// </summary>
        public long PagesSkippedAsDiscarded { get; set; }

        public double ThroughputMBps { get; set; }

        /// <summary>
        /// Delta pages (XBZRLE): what the cache did; null when deltas were off or the target did not take them.
        /// </summary>
        public DeltaSection? Delta { get; set; }
    }

    /// <summary>Delta pages: the source's cache and what it saved (QEMU's <c>xbzrle</c> statistics).</summary>
    public sealed class DeltaSection
    {
        /// <summary>The cache's size at the end (it may be resized while the migration runs).</summary>
        public long CacheBytes { get; set; }

        /// <summary>Pages sent as a delta (the same figure as <see cref="TransferSection.PagesDelta"/>).</summary>
        public long Hits { get; set; }

        /// <summary>Pages sent whole after round 0: the cache held no copy of them (never sent, or evicted).</summary>
        public long Misses { get; set; }

        /// <summary>Pages the cache held whose delta would not have saved an eighth of the page: sent whole.</summary>
        public long Overflows { get; set; }

        /// <summary>Payload bytes the deltas saved against sending those pages raw.</summary>
        public long BytesSaved { get; set; }
    }

    public sealed class RoundSection
    {
        public int Round { get; set; }

        public long DirtyPages { get; set; }

        public long PagesSent { get; set; }

        public long Bytes { get; set; }

        public double Ms { get; set; }

        public double DirtyRatePagesPerSec { get; set; }

        /// <summary>True for the stop-and-copy round.</summary>
        public bool Final { get; set; }

        /// <summary>The downtime limit this round ran with (a live change or the ramp moves it).</summary>
        public double DowntimeLimitMs { get; set; }

        /// <summary>The bandwidth cap this round ran with; null: uncapped.</summary>
        public double? MaxBandwidthBytesPerSec { get; set; }

        /// <summary>The convergence method in force: none, auto or dirtyLimit.</summary>
        public string? Converge { get; set; }

        /// <summary>The largest share of any vCPU's time a throttle took after this round, in percent.</summary>
        public double ThrottlePercent { get; set; }

        /// <summary>The dirty limit's ceiling per vCPU after this round; null when none was in force.</summary>
        public double? DirtyLimitBytesPerSec { get; set; }

        /// <summary>The delta-page cache's size this round sent with; null when deltas were off or refused.</summary>
        public long? DeltaCacheBytes { get; set; }

        /// <summary>The guest's work during this round (its vCPUs' steps that did work, per second).</summary>
        public double GuestOpsPerSec { get; set; }

        /// <summary>What the engine expected after this round: whether and when it finishes, or what would help.</summary>
        public string? Prediction { get; set; }
    }

    /// <summary>How the engine made a busy guest finish, and what that cost the guest.</summary>
    public sealed class ConvergenceSection
    {
        /// <summary>The method at the end: none, auto or dirtyLimit.</summary>
        public string Method { get; set; } = "none";

        /// <summary>Times the guest was slowed a step.</summary>
        public int Steps { get; set; }

        /// <summary>The most any vCPU was throttled, in percent.</summary>
        public double MaxThrottlePercent { get; set; }

        /// <summary>vCPU time the throttle took, summed over the vCPUs.</summary>
        public double VcpuMsStolen { get; set; }

        /// <summary>
        /// The guest's work per second running alone just before the migration began (the command line's warm-up);
        /// null when nothing measured it. The baseline of what the migration cost the guest.
        /// </summary>
        public double? GuestOpsPerSecBefore { get; set; }

        /// <summary>The guest's work per second in the first round (before any throttle) and over all rounds.</summary>
        public double GuestOpsPerSecFirstRound { get; set; }

        public double GuestOpsPerSecDuring { get; set; }

        /// <summary>Times the user changed the settings while the migration ran.</summary>
        public int ParameterChanges { get; set; }

        /// <summary>The last prediction.</summary>
        public string? Prediction { get; set; }
    }

    public sealed class VerificationSection
    {
        public long PagesCompared { get; set; }

        public long MismatchedPages { get; set; }

        public string GuestSelfCheck { get; set; } = "not run";

        public List<long> FirstMismatchedPages { get; set; } = [];
    }
}
