using BenchmarkDotNet.Attributes;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;

namespace Migration.Benchmarks;

/// <summary>
/// The guest write path: a store plus its dirty-log mark. Baseline is the same store with logging off, so the ratio is
/// the cost of dirty tracking. One operation = one page touched.
/// </summary>
[MemoryDiagnoser]
public class GuestWritePathBenchmarks
{
    private const int PagesPerOp = 4096;
    private GuestRam _ram = null!;
    private DirtyLog _log = null!;
    private GuestMemory _memory = null!;

    [Params(false, true)]
    public bool Logging { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _ram = GuestRam.Allocate(64L << 20);
        _log = new DirtyLog(_ram.PageCount, DirtyLogMode.Eager);
        _memory = new GuestMemory(_ram, _log);
        if (Logging)
        {
            _log.Enable();
        }
    }

    [GlobalCleanup]
    public void Cleanup() => _ram.Dispose();

    /// <summary>
    /// One 8-byte store per page, each page's bit already set after the first pass (the common case).
    /// </summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = PagesPerOp)]
    public void Store64PerPage()
    {
        for (long p = 0; p < PagesPerOp; p++)
        {
            _memory.WriteUInt64((p << PageGeometry.PageShift) + 64, (ulong)p);
        }
    }

    /// <summary>A whole 4 KiB page written and marked: a workload filling memory.</summary>
    [Benchmark(OperationsPerInvoke = PagesPerOp)]
    public void FillWholePage()
    {
        for (long p = 0; p < PagesPerOp; p++)
        {
            _memory.FillPagePattern(p, (ulong)p, 24);
        }
    }
}
