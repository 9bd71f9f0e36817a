namespace Migration.Shared.Guest.Postcopy;

/// <summary>
/// A guest thread touched a page that never arrived: postcopy gave the guest up (its source is lost, or it failed
/// verification). The guest must not run on.
/// </summary>
public sealed class PostcopyAbandonedException : Exception
{
    public PostcopyAbandonedException(long pfn)
        : base($"postcopy was abandoned: page {pfn} never arrived") => Pfn = pfn;

    public PostcopyAbandonedException()
    {
    }

    public PostcopyAbandonedException(string message)
        : base(message)
    {
    }

    public PostcopyAbandonedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The page that never arrived.</summary>
    public long Pfn { get; }
}
