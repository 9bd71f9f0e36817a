using BenchmarkDotNet.Attributes;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;

namespace Migration.Benchmarks;

/// <summary>
/// Sync of the log of a 1 GiB guest (262144 pages, a 32 KiB bitmap) into the migration bitmap, with a share of pages
/// dirty. A sync takes microseconds, too short for per-invocation setup, so each operation first restores the dirty
/// pattern with a raw copy of the log words; the <see cref="RestoreOnly"/> baseline measures that copy alone.
/// </summary>
[MemoryDiagnoser]
public class DirtyLogSyncBenchmarks
{
    private const long Pages = (1L << 30) >> PageGeometry.PageShift;
    private DirtyLog _log = null!;
    private PageBitmap _bitmap = null!;
    private ulong[] _pattern = [];

    [Params(DirtyLogMode.Eager, DirtyLogMode.Manual)]
    public DirtyLogMode Mode { get; set; }

    /// <summary>Share of pages dirty at the sync, in percent.</summary>
    [Params(1, 25)]
    public int DirtyPercent { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _log = new DirtyLog(Pages, Mode);
        _log.Enable();
        _bitmap = new PageBitmap(Pages);
        var rng = new Random(42);
        _pattern = new ulong[Pages / 64];
        for (long i = 0; i < Pages * DirtyPercent / 100; i++)
        {
            long p = rng.NextInt64(Pages);
            _pattern[p >> 6] |= 1UL << (int)(p & 63);
        }
    }

    [Benchmark(Baseline = true)]
    public void RestoreOnly() => _log.LoadRawWords(_pattern);

    [Benchmark]
    public long RestoreAndSync()
    {
        _log.LoadRawWords(_pattern);
        return _log.SyncInto(_bitmap);
    }
}
