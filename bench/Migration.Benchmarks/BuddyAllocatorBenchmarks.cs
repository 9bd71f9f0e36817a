using BenchmarkDotNet.Attributes;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;

namespace Migration.Benchmarks;

/// <summary>
/// Allocate-then-free pairs on the in-RAM buddy allocator, 4 KiB (order 0) and 4 MiB (order 10), with dirty logging on
/// as during a migration. The 4 KiB case splits and merges through all ten orders each time on a fresh 4 MiB block.
/// </summary>
[MemoryDiagnoser]
public class BuddyAllocatorBenchmarks
{
    private GuestRam _ram = null!;
    private GuestKernel _kernel = null!;

    [Params(0, 10)]
    public int Order { get; set; }

    [Params(false, true)]
    public bool Poison { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _ram = GuestRam.Allocate(256L << 20);
        var log = new DirtyLog(_ram.PageCount, DirtyLogMode.Eager);
        var memory = new GuestMemory(_ram, log);
        _kernel = GuestKernel.Boot(memory, new KernelBootOptions { PoisonValue = Poison ? (byte)0xAA : null });
        // Take the small blocks boot left behind, so every measured allocation exercises the split path.
        for (int k = 0; k < GuestKernel.MaxOrder; k++)
        {
            while (_kernel.FreeBlocks(k) > 0)
            {
                _kernel.Allocate(k, PageOwner.KernelData);
            }
        }

        log.Enable();
    }

    [GlobalCleanup]
    public void Cleanup() => _ram.Dispose();

    [Benchmark]
    public void AllocateAndFree()
    {
        long pfn = _kernel.Allocate(Order, PageOwner.Anonymous);
        _kernel.Free(pfn, Order);
    }
}
