using System.Runtime.InteropServices;

namespace Migration.Target.Hosting;

/// <summary>
/// Gives the memory a finished migration used back to the host, so a long-lived target stays as small as it started:
/// the receive pools' idle blocks first, then a compacting collection that returns the freed heap, then (glibc only)
/// <c>malloc_trim</c>, which hands the native allocator's freed arena pages back. Run between migrations, off any
/// call's thread; a Begin that arrives meanwhile waits for the collection, outside any downtime.
/// </summary>
internal sealed partial class IdleMemory(LargeBlockMemoryPoolFactory? pools = null)
{
    private bool _trimUnavailable = !OperatingSystem.IsLinux();

    public void Release()
    {
        pools?.TrimIdle();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        TrimNativeHeap();
    }

    private void TrimNativeHeap()
    {
        if (_trimUnavailable)
        {
            return;
        }

        try
        {
            _ = MallocTrim(0);
        }
        catch (EntryPointNotFoundException)
        {
            _trimUnavailable = true; // a libc without it (musl): nothing to give back this way
        }
        catch (DllNotFoundException)
        {
            _trimUnavailable = true;
        }
    }

    [LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int MallocTrim(nuint pad);
}
