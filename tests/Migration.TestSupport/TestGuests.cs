using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;

namespace Migration.TestSupport;

/// <summary>Small guests for unit tests; each owns its RAM and frees it on dispose.</summary>
public sealed class TestGuest : IDisposable
{
    public TestGuest(long ramBytes = 16L << 20, DirtyLogMode mode = DirtyLogMode.Eager, byte? poison = null,
        long clearChunkPages = 1024)
    {
        Ram = GuestRam.Allocate(ramBytes);
        Log = new DirtyLog(Ram.PageCount, mode, clearChunkPages);
        Memory = new GuestMemory(Ram, Log);
        Kernel = GuestKernel.Boot(Memory, new KernelBootOptions { PoisonValue = poison });
    }

    public GuestRam Ram { get; }

    public DirtyLog Log { get; }

    public GuestMemory Memory { get; }

    public GuestKernel Kernel { get; }

    public void Dispose() => Ram.Dispose();
}

public static class Hashing
{
    /// <summary>A content hash of all of RAM, to compare two runs byte for byte.</summary>
    public static UInt128 Of(GuestRam ram)
    {
        var hash = new System.IO.Hashing.XxHash128();
        for (long p = 0; p < ram.PageCount; p++)
        {
            hash.Append(ram.Page(p));
        }

        return hash.GetCurrentHashAsUInt128();
    }
}
