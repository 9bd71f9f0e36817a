using Migration.Shared.Concurrency;
using Migration.Shared.Guest;
using Migration.Source.Transport;

namespace Migration.Source.Precopy;

/// <summary>How a migration is run. Defaults carry their reason.</summary>
public sealed record MigrationOptions
{
    public required Uri Target { get; init; }

    /// <summary>Stop-and-copy once the expected downtime fits this (QEMU and Cloud Hypervisor default to 300 ms).</summary>
    public TimeSpan DowntimeLimit { get; init; } = TimeSpan.FromMilliseconds(300);

    /// <summary>Bytes per second over all channels; null = uncapped. Also our link emulation (10 Gbit/s = 1.25e9).</summary>
    public double? MaxBandwidthBytesPerSecond { get; init; }

    /// <summary>Parallel channels, each its own HTTP/2 connection (QEMU multifd defaults to 2).</summary>
    public int Channels { get; init; } = 2;

    public bool Compress { get; init; }

    /// <summary>A migration whose dirty set does not shrink below the limit in this many rounds fails as not converging.</summary>
    public int MaxRounds { get; init; } = 30;

    /// <summary>Overall limit for the precopy phase.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Pages per message: 256 pages = 1 MiB raw, big enough to amortise framing, small enough to interleave channels.</summary>
    public int PagesPerBatch { get; init; } = 256;

    /// <summary>Free page hinting through the balloon device (the product's optimisation). On by default.</summary>
    public bool Hints { get; init; } = true;

    /// <summary>
    /// Permit manual dirty-log mode with hints but without wait-on-ack, which can lose a write (race R5). For the
    /// fuzzer and for demonstrations only.
    /// </summary>
    public bool AllowUnsafe { get; init; }

    /// <summary>Mutations and scheduling points (race fuzzer only).</summary>
    internal RaceHooks Hooks { get; init; } = RaceHooks.None;

    /// <summary>Replaces the gRPC transport (race fuzzer only).</summary>
    internal Func<VirtualMachine, TransferCounters, IMigrationTransport>? TransportFactory { get; init; }

    /// <summary>Rounds to run before stop-and-copy even if the estimate fits (race fuzzer only: more syncs to race).</summary>
    internal int MinRounds { get; init; }

    /// <summary>
    /// While this returns true the engine keeps running precopy rounds even if the estimate fits (tests only: hold the
    /// guest in precopy until something the test injected has been seen, whatever the machine's speed).
    /// </summary>
    internal Func<bool>? HoldPrecopy { get; init; }

    /// <summary>Someone else runs the device's hint thread (the fuzzer's scheduler); the engine starts none.</summary>
    internal bool ExternalHintThread { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> when these options and the guest cannot be migrated safely.</summary>
    public void ValidateFor(GuestConfig guest)
    {
        ArgumentNullException.ThrowIfNull(guest);
        if (Hints && guest.DirtyLogMode == Shared.DirtyTracking.DirtyLogMode.Manual && !guest.WaitOnAck && !AllowUnsafe
            && !Hooks.Has(Mutation.ManualWithoutWaitOnAck))
        {
            throw new ArgumentException(
                "refusing free page hinting with manual dirty-log mode and wait-on-ack off: a guest that reuses a hinted " +
                "block before the device has processed it writes a page whose dirty bit the hint's chunk clear then wipes, " +
                "and that write is lost (race R5). Use --wait-on-ack on, --dirty-log eager or --hints off; " +
                "--allow-unsafe exists for demonstrations.");
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

        if (PagesPerBatch is < 1 or > 4096)
        {
            throw new ArgumentException("Pages per batch must be 1..4096.");
        }
    }
}
