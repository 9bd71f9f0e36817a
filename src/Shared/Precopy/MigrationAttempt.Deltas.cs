namespace Migration.Shared.Precopy;

internal sealed partial class MigrationAttempt
{
    /// <summary>
    /// Resizes the delta-page cache while the migration runs (QEMU's <c>xbzrle-cache-size</c> parameter): waits for
    /// the batches being encoded, keeps the most recently sent pages that fit, and the channels go on with the new
    /// size (0: every page goes whole from then on). False when this attempt has no cache (deltas off); after the
    /// migration ended it changes nothing.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">
    /// Negative, or above <see cref="Transport.DeltaPageCache.MaxBytes"/>.
    /// </exception>
    public bool ResizeDeltaCache(long bytes)
    {
        if (_transport.DeltaCache is not { } cache)
        {
            return false;
        }

        cache.Resize(bytes);
        return true;
    }
}
