using Migration.Shared.Hosting;
using Migration.Shared.Precopy;

namespace Migration.Target;

/// <summary>How the target gets its side of the switchover digests.</summary>
public enum VerifyMode
{
    /// <summary>Digests taken as each page is written while receiving (the page is in cache then).</summary>
    Incremental,

    /// <summary>Rehash every in-use page inside the downtime.</summary>
    Full,
}

/// <summary>Command-line settings of the target process. Each default is set here once, with its reason.</summary>
public sealed record TargetOptions
{
    public static readonly TargetOptions Defaults = new();

    /// <summary>Where to listen; port 0 picks a free port (printed on start). Loopback by default.</summary>
    public string Listen { get; init; } = "http://127.0.0.1:50051";

    /// <summary>Exit after the first migration ends (resumed guest finished its run-after, or failure).</summary>
    public bool Once { get; init; }

    public string? ReportPath { get; init; }

    /// <summary>
    /// Write the received RAM image (page p at offset p*4096) at switchover, before the vCPUs resume.
    /// </summary>
    public string? DumpRamPath { get; init; }

    /// <summary>
    /// Let the resumed guest run this long, then stop it and run its self-check. Null: run until exit.
    /// </summary>
    public double? RunAfterSeconds { get; init; }

    /// <summary>
    /// Guest RAM to map and back with memory at startup, before listening (QEMU's destination is started with the
    /// guest's memory size and <c>-mem-prealloc</c> the same way). The first migration of exactly this size uses it
    /// and skips a page fault per first write. Null: map RAM when a migration begins.
    /// </summary>
    public long? PreallocBytes { get; init; }

    /// <summary>
    /// Incremental by default: only the receive path writes target RAM before the VM exists, so a digest taken as a
    /// page is written is its digest at switchover, and hashing leaves the downtime. Full rehashes, for when RAM could
    /// have been written by something else.
    /// </summary>
    public VerifyMode Verify { get; init; } = VerifyMode.Incremental;

    /// <summary>
    /// Largest gRPC message accepted. Batches are a few MiB; Complete (verify-first) or Confirm (resume-first, with a
    /// bit per page of free-page map beside) carries 8 bytes of digest per in-use page (16 MiB for a fully used 8 GiB
    /// guest), so 64 MiB leaves headroom without inviting abuse; the source checks the fit before it pauses.
    /// </summary>
    public int MaxMessageBytes { get; init; } = 64 << 20;

    /// <summary>
    /// Largest page batch accepted on a page stream. A batch is applied whole, so it must fit in the stream's HTTP/2
    /// flow-control window (16 MiB) or it could never arrive; 8 MiB is eight default batches of 256 pages.
    /// </summary>
    public int MaxPageMessageBytes { get; init; } = 8 << 20;

    /// <summary>
    /// A receiving migration whose source does nothing for this long (no call, no batch, no stream opened or closed)
    /// is discarded as abandoned. Thirty seconds: far above the gap between two batches at any useful rate, short
    /// enough that a dead source does not hold the target for long.
    /// </summary>
    public TimeSpan Lease { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>A shared secret every caller must present (<c>authorization: Bearer TOKEN</c>); null: none required.</summary>
    public string? Token { get; init; }

    /// <summary>The server certificate and its key (PEM) for <c>https://</c>.</summary>
    public string? TlsCertificatePath { get; init; }

    public string? TlsKeyPath { get; init; }

    /// <summary>
    /// With this CA (PEM), mutual TLS: every client must present a certificate issued by it, and a migration's later
    /// calls must come with the certificate it began with.
    /// </summary>
    public string? TlsClientCaPath { get; init; }

    /// <summary>
    /// A migration of the received guest onward (the management API's StartMigration, which names the next target
    /// and may set the tuning): the defaults it starts from, among them how this target proves itself to the next.
    /// </summary>
    public MigrationOptions Onward { get; init; } = MigrationOptions.Defaults;

    /// <summary>Who may call this target, from the settings above.</summary>
    public ServerSecurity Security => new()
    {
        Listen = Listen,
        Token = Token,
        TlsCertificatePath = TlsCertificatePath,
        TlsKeyPath = TlsKeyPath,
        TlsClientCaPath = TlsClientCaPath,
        Name = "this target",
    };
}
