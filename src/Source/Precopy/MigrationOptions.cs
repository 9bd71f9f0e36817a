using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;

namespace Migration.Source.Precopy;

/// <summary>How pages are encoded on the wire beyond zero-page detection.</summary>
public enum Compression
{
    None,

    /// <summary>LZ4 (K4os), kept only for pages it shrinks by at least an eighth.</summary>
    Lz4,
}

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

    /// <summary>Overall limit for the precopy phase.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Pages per message: 256 pages = 1 MiB raw, big enough to amortise framing, small enough to interleave channels.
    /// </summary>
    public int PagesPerBatch { get; init; } = 256;

    /// <summary>Free page hinting through the balloon device (the product's optimisation). On by default.</summary>
    public bool Hints { get; init; } = true;

    /// <summary>
    /// Permit manual dirty-log mode with hints but without wait-on-ack, which can lose a write (race R5). For
    /// demonstrations, and for the race fuzzer, which shows that the write is lost.
    /// </summary>
    public bool AllowUnsafe { get; init; }

    /// <summary>
    /// Throws <see cref="ArgumentException"/> when these options and the guest cannot be migrated safely.
    /// </summary>
    public void ValidateFor(GuestConfig guest)
    {
        ArgumentNullException.ThrowIfNull(guest);
        if (Hints && guest.DirtyLogMode == DirtyLogMode.Manual && !guest.WaitOnAck && !AllowUnsafe)
        {
            throw new ArgumentException(
                "refusing free page hinting with manual dirty-log mode and wait-on-ack off: " +
                "a guest that reuses a hinted block before the device has processed it writes a page " +
                "whose dirty bit the hint's chunk clear then wipes, and that write is lost (race R5). " +
                "Use --wait-on-ack on, --dirty-log eager or --hints off; --allow-unsafe exists for demonstrations.");
        }
    }

    public void Validate()
    {
        if (Target.Scheme != Uri.UriSchemeHttp)
        {
            throw new ArgumentException($"--target must be an http:// URL, got '{Target}'.");
        }

        if (DowntimeLimit <= TimeSpan.Zero)
        {
            throw new ArgumentException("--downtime-ms must be positive.");
        }

        if (MaxBandwidthBytesPerSecond is <= 0)
        {
            throw new ArgumentException("--max-bandwidth must be positive.");
        }

        if (Channels is < 1 or > 64)
        {
            throw new ArgumentException($"--channels must be 1..64, got {Channels}.");
        }

        if (MaxRounds < 1)
        {
            throw new ArgumentException("--max-rounds must be at least 1.");
        }

        if (Timeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("--timeout-seconds must be positive.");
        }

        if (PagesPerBatch is < 1 or > 4096)
        {
            throw new ArgumentException("Pages per batch must be 1..4096.");
        }
    }
}
