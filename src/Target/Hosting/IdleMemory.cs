namespace Migration.Target.Hosting;

/// <summary>
/// Gives the memory a finished migration used back to the host, so a long-lived target stays as small as it started:
/// the receive pools' idle blocks first, then a compacting collection that returns the freed heap. Run between
/// migrations, off any call's thread; a Begin that arrives meanwhile waits for the collection, outside any downtime.
/// </summary>
internal sealed class IdleMemory(LargeBlockMemoryPoolFactory? pools = null)
{
    public void Release()
    {
        pools?.TrimIdle();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }
}
