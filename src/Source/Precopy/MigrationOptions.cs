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
