namespace Migration.Shared.Precopy;

internal sealed partial class MigrationAttempt
{
    /// <summary>
    /// Gives the delta-page cache the size the round's settings ask for (QEMU's <c>xbzrle-cache-size</c>, changed
    /// through <c>SetMigrationParameters</c>): called at a round's start, when no channel encodes, it keeps the most
    /// recently sent pages that fit, capped at the guest's RAM as at the start; 0 sends every page whole until the
    /// cache grows again. Nothing to do when deltas are off or the target did not take them.
    /// </summary>
    private void ApplyDeltaCacheSize(MigrationParameters parameters)
    {
        if (parameters.DeltaCacheBytes is { } bytes && _transport.DeltaCache is { } cache)
        {
            cache.Resize(Math.Min(bytes, _vm.Ram.SizeBytes));
        }
    }
}
