namespace Migration.Bench;

/// <summary>
/// The scale scenario: idle guests of growing size (1 to 128 GiB), hints off and on, each a fresh target without
/// <c>--prealloc</c>, so untouched guest RAM costs neither side anything. Hinted, the cost must follow the memory in
/// use, not the RAM size. Sizes whose touched memory (about 6% of RAM on each side) would not fit in this machine's
/// memory are left out and said so.
/// </summary>
internal sealed partial class BenchRunner
{
    /// <summary>Guest sizes of the scale scenario, in GiB (1 and 8 with --quick).</summary>
    public static IReadOnlyList<int> ScaleSizesGiB(bool quick) => quick ? [1, 8] : [1, 8, 32, 64, 128];

    /// <summary>Share of an idle guest's RAM that both processes touch (kernel, descriptors, page cache).</summary>
    private const double TouchedShare = 0.06;

    /// <summary>The idle guest's page cache share (as in idle-8g).</summary>
    private const double InUseShare = 0.045;

    /// <summary>Scenario suffix of the guests whose memory in use is the 8 GiB guest's at every size.</summary>
    public const string FixedSuffix = "-fixed";

    private async Task RunScaleAsync(CancellationToken ct)
    {
        long memory = _results.Machine.MemoryBytes;
        foreach (int gib in ScaleSizesGiB(options.Quick))
        {
            long ram = (long)gib << 30;
            if (memory > 0 && 2 * TouchedShare * ram > 0.8 * memory)
            {
                string why = $"scale-{gib}g left out: both sides would touch about {2 * TouchedShare * gib:F0} GiB, " +
                    $"more than 80% of this machine's {memory >> 30} GiB";
                output.WriteLine($"bench: {why}");
                _results.ScaleSkipped.Add(why);
                continue;
            }

            // Two guests per size: 4.5% of RAM in use (in use grows with the size), and the 8 GiB guest's 370 MiB in
            // use whatever the size (only the RAM grows): hinted, the second must stay about flat.
            foreach (var (suffix, share) in new[] { (string.Empty, InUseShare), (FixedSuffix, InUseShare * 8 / gib) })
            {
                for (int repeat = 1; repeat <= options.Repeat; repeat++)
                {
                    foreach (bool hints in new[] { false, true })
                    {
                        var run = await RunMigrationAsync($"scale-{gib}g{suffix}", ram,
                            ["--workload", "idle", "--page-cache-share", share.ToString("R", null)],
                            BenchScenario.Uncapped, hints, repeat, channels: 2, ct, prealloc: false);
                        _results.Scale.Add(run);
                        Save();
                    }
                }
            }
        }
    }
}
