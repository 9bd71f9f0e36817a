using BenchmarkDotNet.Attributes;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Balloon;

namespace Migration.Benchmarks;

/// <summary>
/// The migration bitmap of a 1 GiB guest: scanning for the next dirty page (the send path) at two densities, and a
/// free-page hint clearing a 4 MiB block (the hint thread's apply: chunk clear in manual mode, then the bits).
/// </summary>
[MemoryDiagnoser]
public class BitmapAndHintBenchmarks
{
    private const long Pages = (1L << 30) >> PageGeometry.PageShift;
    private PageBitmap _bitmap = null!;
    private MigrationBitmap _hinted = null!;

    [Params(1, 50)]
    public int DirtyPercent { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _bitmap = new PageBitmap(Pages);
        var rng = new Random(3);
        for (long i = 0; i < Pages * DirtyPercent / 100; i++)
        {
            _bitmap.Set(rng.NextInt64(Pages));
        }

        var log = new DirtyLog(Pages, DirtyLogMode.Manual, clearChunkPages: 1L << 18);
        log.Enable();
        _hinted = new MigrationBitmap(log);
    }

    /// <summary>
    /// Walks every set bit, as a round's send loop does (without clearing, so every run sees the same map).
    /// </summary>
    [Benchmark]
    public long ScanAllDirty()
    {
        long n = 0;
        for (long p = _bitmap.FindNextSet(0); p >= 0; p = _bitmap.FindNextSet(p + 1))
        {
            n++;
        }

        return n;
    }

    /// <summary>
    /// One 4 MiB hint applied by the device's own rule (bits set again first): under the bitmap lock, the manual-mode
    /// chunk clear (already clear: the common case) and 1024 bits.
    /// </summary>
    [Benchmark]
    public long ApplyHintBlock()
    {
        for (int w = 4096 / 64; w < (4096 + 1024) / 64; w++)
        {
            _hinted.Pages.OrWord(w, ulong.MaxValue);
        }

        return StandardHintDefences.Instance.Apply(_hinted, 4096, 1024);
    }
}
