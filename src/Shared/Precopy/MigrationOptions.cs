using Migration.Shared.DirtyTracking;
using Migration.Shared.Machine;
using Migration.Shared.Transport;

namespace Migration.Shared.Precopy;

/// <summary>How a migration is run: the user's options. Each default is set here once, with its reason.</summary>
public sealed record MigrationOptions
{
    /// <summary>The defaults, for a target named later (the CLI reads its defaults from here).</summary>
    public static readonly MigrationOptions Defaults = new() { Target = new Uri("http://127.0.0.1:50051") };

    public required Uri Target { get; init; }

    /// <summary>
    /// Stop-and-copy once the expected downtime fits this (QEMU and Cloud Hypervisor default to 300 ms).
    /// </summary>
    public TimeSpan DowntimeLimit { get; init; } = TimeSpan.FromMilliseconds(300);

    /// <summary>
    /// Bytes per second over all channels; null = uncapped. Also our link emulation (10 Gbit/s = 1.25e9).
    /// </summary>
    public double? MaxBandwidthBytesPerSecond { get; init; }

    /// <summary>Parallel channels, each its own HTTP/2 connection (QEMU multifd defaults to 2).</summary>
    public int Channels { get; init; } = 2;

    /// <summary>
    /// Off by default: on a fast link zero detection already takes what is cheap; LZ4 costs CPU per page.
    /// </summary>
    public Compression Compression { get; init; } = Compression.None;

    /// <summary>
    /// A migration whose dirty set does not shrink below the limit in this many rounds fails as not converging.
    /// </summary>
    public int MaxRounds { get; init; } = 30;

    /// <summary>
    /// Bounds everything up to the handover (setup, rounds, stop-and-copy): past it the migration fails with the phase
    /// it was in, and the guest runs on. The handover is bounded on its own (<see cref="CompleteTimeout"/> and
    /// <see cref="HandoverWindow"/>), since giving up there must not guess.
    /// </summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// How long the source waits for the target's answer to Complete. The target verifies in well under a second on
    /// the guests this runs; a minute leaves room for a full rehash of a large guest.
    /// </summary>
    public TimeSpan CompleteTimeout { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// When the Complete answer is lost or late, how long the source keeps asking the target, by migration id, what it
    /// decided, before it reports the outcome unknown (the guest stays paused: it may be running on the target).
    /// </summary>
    public TimeSpan HandoverWindow { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// A connection on which nothing moves for this long while pages are being sent is stalled: the migration fails and
    /// the guest runs on. Far above a batch's time at any useful rate; the lease the target applies is the same.
    /// </summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Deadline of Begin, Status and Cancel calls.</summary>
    public TimeSpan ControlCallTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Switchover order. On (default): the target checks the state, resumes the guest with its outputs held and
    /// answers; the downtime ends there, and the page digests (taken from the stopped source guest) are compared
    /// after, with the source still paused: a mismatch discards the target's copy and the source guest resumes.
    /// Off: every digest is computed and compared inside the downtime, before the target resumes. Measured on an idle
    /// 8 GiB guest the first halves the downtime (see the README's switchover figures).
    /// </summary>
    public bool ResumeFirst { get; init; } = true;

    /// <summary>Credentials and TLS trust for reaching the target; none by default (a loopback target).</summary>
    public TransportSecurity Security { get; init; } = TransportSecurity.None;

    /// <summary>
    /// Pages per message: 256 pages = 1 MiB raw, big enough to amortise framing, small enough to interleave channels.
    /// </summary>
    public int PagesPerBatch { get; init; } = 256;

    /// <summary>
    /// How a guest that dirties faster than the link is made to finish. The dirty limit by default: on the convergence
    /// benchmark (README, "Convergence") both methods finished every busy guest within the downtime limit, and at one
    /// to four times the link the dirty limit took 1.1-2.8x less time and sent 1.1-2.9x fewer bytes than auto-converge,
    /// for a guest loss from 7 points more to 22 points less (it slows only the vCPUs that write, each by what it
    /// needs, from the first step, where auto-converge climbs 10 points every second round).
    /// </summary>
    public ConvergeMethod Converge { get; init; } = ConvergeMethod.DirtyLimit;

    /// <summary>Auto-converge's steps (QEMU's defaults).</summary>
    public ThrottleSettings Throttle { get; init; } = ThrottleSettings.Qemu;

    /// <summary>The dirty-rate limit's ceiling per vCPU, bytes per second; null: derived from the link.</summary>
    public double? DirtyLimitBytesPerSecond { get; init; }

    /// <summary>Optional: a downtime limit that starts low and rises each round to <see cref="DowntimeLimit"/>.</summary>
    public DowntimeRamp? DowntimeRamp { get; init; }

    /// <summary>The settings the migration starts with; the management API may change them while it runs.</summary>
    public MigrationParameters Parameters => new()
    {
        DowntimeLimit = DowntimeLimit,
        DowntimeRamp = DowntimeRamp,
        MaxBandwidthBytesPerSecond = MaxBandwidthBytesPerSecond,
        MaxRounds = MaxRounds,
        Converge = Converge,
        Throttle = Throttle,
        DirtyLimitBytesPerSecond = DirtyLimitBytesPerSecond,
        DeltaCacheBytes = DeltaCacheBytes > 0 ? DeltaCacheBytes : null,
    };

    /// <summary>What the transport reads of these options: where the target is, how to reach it, how to send.</summary>
    internal TransportOptions Transport => new()
    {
        Target = Target,
        Security = Security,
        ControlCallTimeout = ControlCallTimeout,
        Compression = Compression,
        PagesPerBatch = PagesPerBatch,
        DeltaCacheBytes = DeltaCacheBytes,
    };

    /// <summary>Free page hinting through the balloon device (the product's optimisation). On by default.</summary>
    public bool Hints { get; init; } = true;

    /// <summary>
    /// Ballooned pages are neither scanned nor sent (the device knows they are discarded). Off: sent as zero pages,
    /// as QEMU does; for comparisons. On by default.
    /// </summary>
    public bool SkipBallooned { get; init; } = true;

    /// <summary>
    /// Pages free page reporting discarded, and no store touched since, are neither scanned nor sent in the first
    /// round. Off: scanned and sent as zero pages, as QEMU does; for comparisons. On by default.
    /// </summary>
    public bool SkipDiscarded { get; init; } = true;

    /// <summary>
    /// Permit manual dirty-log mode with hints but without wait-on-ack, which can lose a write (race R5). For
    /// demonstrations, and for the race fuzzer, which shows that the write is lost.
    /// </summary>
    public bool AllowUnsafe { get; init; }

    /// <summary>
    /// Throws <see cref="ArgumentException"/> when these options and the guest cannot be migrated safely; the message
    /// calls each option by <paramref name="names"/> (the command line's flags by default).
    /// </summary>
    public void ValidateFor(GuestConfig guest, OptionNames? names = null)
    {
        ArgumentNullException.ThrowIfNull(guest);
        names ??= OptionNames.Flags;
        if (Hints && guest.DirtyLogMode == DirtyLogMode.Manual && !guest.WaitOnAck && !AllowUnsafe)
        {
            throw new ArgumentException(
                "refusing free page hinting with manual dirty-log mode and wait-on-ack off: " +
                "a guest that reuses a hinted block before the device has processed it writes a page " +
                "whose dirty bit the hint's chunk clear then wipes, and that write is lost (race R5). " +
                (names.Api
                    ? "This guest runs that way; set hints to false."
                    : "Use --wait-on-ack on, --dirty-log eager or --hints off; --allow-unsafe exists for " +
                        "demonstrations."));
        }
    }

    /// <summary>
    /// Throws <see cref="ArgumentException"/> for options no migration can run with; the message calls each option by
    /// <paramref name="names"/> (the command line's flags by default).
    /// </summary>
    public void Validate(OptionNames? names = null)
    {
        names ??= OptionNames.Flags;
        if (Target.Scheme != Uri.UriSchemeHttp && Target.Scheme != Uri.UriSchemeHttps)
        {
            throw new ArgumentException($"{names.Target} must be an http:// or https:// URL, got '{Target}'.");
        }

        bool tls = Security.CaPath is not null || Security.ClientCertificatePath is not null;
        if (Target.Scheme == Uri.UriSchemeHttp && tls)
        {
            string flags = $"{Security.FlagPrefix}tls-ca and {Security.FlagPrefix}tls-client-cert";
            throw new ArgumentException(names.Api
                ? $"{names.Target} '{Target}' must be https://: this process trusts and proves itself to the " +
                    $"targets it migrates to over TLS ({flags})."
                : $"{flags} need an https:// {names.Target}.");
        }

        if (Security.CleartextProblem(Target, names.Target) is { } cleartext)
        {
            throw new ArgumentException(cleartext);
        }

        foreach (var (name, span) in new[]
        {
            ("--complete-timeout", CompleteTimeout), ("--handover-window", HandoverWindow),
            ("--stall-timeout", StallTimeout), ("the control call timeout", ControlCallTimeout),
        })
        {
            if (span <= TimeSpan.Zero)
            {
                throw new ArgumentException($"{name} must be positive.");
            }
        }

        Parameters.Validate(names);
        if (Channels is < 1 or > 64)
        {
            throw new ArgumentException($"{names.Channels} must be 1..64, got {Channels}.");
        }

        if (Timeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("--timeout-seconds must be positive.");
        }

        if (PagesPerBatch is < 1 or > 4096)
        {
            throw new ArgumentException("Pages per batch must be 1..4096.");
        }

        if (DeltaCacheBytes is < 0 or > DeltaPageCache.MaxBytes)
        {
            throw new ArgumentException($"{names.DeltaCache} must be from 0 to 1 TiB.");
        }
    }

    /// <summary>
    /// Delta pages (QEMU's XBZRLE): the bytes of the source's cache of pages as sent; 0 (the default) turns deltas
    /// off. A page sent again goes as a delta against its cached copy when that saves at least an eighth of the page,
    /// and a target that does not take deltas gets whole pages. Off by default, as QEMU's capability is: deltas trade
    /// the source's CPU and memory for bytes, which pays on a slow link (busy guests on 1 Gbit/s: 0.70-0.79 of the
    /// time and down to half the bytes with a cache that holds the hot set) and costs on a fast one (an uncapped
    /// loopback migration of the demo's guest took 25-30% longer, going to first touches of the cache's memory and
    /// copies; see docs/delta-pages.md). Size it to hold the guest's hot set (256 MiB did for the measured 1 GiB
    /// guests; larger than the guest's RAM holds nothing more). Resizable while the migration runs
    /// (<c>SetMigrationParameters.delta_cache_bytes</c>), down to 0 and back, once it started with deltas.
    /// </summary>
    public long DeltaCacheBytes { get; init; }
}
