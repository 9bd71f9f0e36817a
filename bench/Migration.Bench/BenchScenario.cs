namespace Migration.Bench;

/// <summary>An emulated link: a name for tables and the --max-bandwidth value (null = uncapped loopback).</summary>
internal sealed record BenchLink(string Name, string? MaxBandwidth);

/// <summary>
/// A benchmark scenario: a guest (size and workload, as <c>migrate</c> flags) and the published hinted/unhinted ratios
/// it reproduces. Every scenario runs hints off and on, interleaved, on each link.
/// </summary>
internal sealed record BenchScenario(
    string Name,
    string Description,
    long RamBytes,
    IReadOnlyList<string> WorkloadArgs,
    double? PublishedTimeRatio,
    double? PublishedBytesRatio,
    string PublishedSource,
    double? TimeRatioGoal,
    double? BytesRatioGoal)
{
    public static readonly BenchLink TenGbit = new("10gbit", "10Gbit");
    public static readonly BenchLink Uncapped = new("uncapped", null);

    public static IReadOnlyList<BenchLink> Links { get; } = [TenGbit, Uncapped];

    /// <summary>
    /// The published table's scenarios at 8 GiB (1 GiB with <paramref name="quick"/>): idle after boot, stale memory
    /// after a memory-hungry job exited, and a build-like dirtying load.
    /// </summary>
    public static IReadOnlyList<BenchScenario> All(bool quick)
    {
        long ram = quick ? 1L << 30 : 8L << 30;
        string size = quick ? "1g" : "8g";
        return
        [
            new($"idle-{size}", "idle guest: ~4.5% of RAM in use (kernel, page cache), free memory never touched", ram,
                ["--workload", "idle", "--page-cache-share", "0.045"],
                0.21, null, "Wei Wang, virtio-balloon v37: 8 GB idle 2970 -> 620 ms", 0.21, null),
            new($"stale-{size}", "a memory-hungry job filled 90% of RAM and exited: stale data in free pages", ram,
                ["--workload", "memhog", "--memhog-share", "0.9", "--page-cache-share", "0.045"],
                0.074, 361.0 / 8100, "Liang Li RFC, 10 GbE: 7436 ms / 8.1 GB -> 552 ms / 361 MB", 0.07, 0.05),
            new($"busy-{size}",
                "build-like load: 300 MiB/s of page writes, 90% to a hot 3% of a 25%-of-RAM working set, " +
                "after earlier jobs left stale data in half of RAM", ram,
                ["--workload", "busy", "--busy-dirty-rate", "300MiB/s", "--busy-working-set", "0.25",
                    "--busy-hot-set", "0.03", "--busy-stale-share", "0.5"],
                0.50, null, "Wei Wang, virtio-balloon v37: 8 GB kernel compile 4502 -> 2273 ms", 0.50, null),
        ];
    }
}
