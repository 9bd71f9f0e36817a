using System.Text.Json;
using System.Text.Json.Serialization;
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

    public VerificationSection Verification { get; set; } = new();

    /// <summary>Free page hinting; null when hints were off.</summary>
    public HintsSection? Hints { get; set; }

    /// <summary>The balloon's inflate/deflate side: target, actual, held pages, what it kept off the wire.</summary>
    public BalloonSection? Balloon { get; set; }

    /// <summary>Free page reporting, when the guest has it.</summary>
    public ReportingSection? Reporting { get; set; }

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
    }

    /// <summary>The balloon device at the end of the migration (inflate and deflate; hints are their own section).</summary>
    public sealed class BalloonSection
    {
        /// <summary>Whether this migration skipped the balloon's pages (off: sent as zero pages, as QEMU does).</summary>
        public bool SkipsBallooned { get; set; }

        public string Encoding { get; set; } = "";

        public string Features { get; set; } = "";

        public long TargetPages { get; set; }

        public long ActualPages { get; set; }

        /// <summary>Pages the device held at the end: discarded on both sides, sent as ranges in the device state.</summary>
        public long HeldPages { get; set; }

        public long PagesSkipped { get; set; }

        public long InflatedDuringMigration { get; set; }

        public long DeflatedDuringMigration { get; set; }

        public long GuestEvents { get; set; }

        public long DeviceErrors { get; set; }

        public string? DeviceError { get; set; }
    }

    /// <summary>Free page reporting as the migration saw it (totals are since the device was created).</summary>
    public sealed class ReportingSection
    {
        /// <summary>Whether this migration skipped discarded pages (off: scanned and sent as zero, as QEMU does).</summary>
        public bool SkipsDiscarded { get; set; }

        /// <summary>Pages skipped as discarded at setup (those still unbacked on the host).</summary>
        public long PagesSkipped { get; set; }

        /// <summary>
        /// Pages the guest reported and the host discarded while this migration ran; each was logged as written and
        /// sent as a zero page.
        /// </summary>
        public long PagesDiscardedDuringMigration { get; set; }

        public long Reports { get; set; }

        public long PagesDiscarded { get; set; }

        /// <summary>Pages reported but kept: the guest poisons free pages with a value that is not zero.</summary>
        public long PagesKeptPoisoned { get; set; }

        /// <summary>Pages the device's discard map has at the end (some may be backed again).</summary>
        public long DiscardMapPages { get; set; }
    }

    public sealed class HintsSection
    {
        public bool WaitOnAck { get; set; }

        public long CmdIds { get; set; }

        public long BlocksReceived { get; set; }

        public long BlocksApplied { get; set; }

        public long BlocksDroppedStale { get; set; }

        public long PagesCleared { get; set; }

        public long DeviceErrors { get; set; }

        /// <summary>The device error that stopped hinting for this migration, if any.</summary>
        public string? DeviceError { get; set; }
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
    }

    public sealed class VerificationSection
    {
        public long PagesCompared { get; set; }

        public long MismatchedPages { get; set; }

        public string GuestSelfCheck { get; set; } = "not run";

        public List<long> FirstMismatchedPages { get; set; } = [];
    }
}
