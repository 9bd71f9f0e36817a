namespace Migration.Shared.DirtyTracking;

/// <summary>How a sync treats the write log; the two modes KVM offers.</summary>
public enum DirtyLogMode
{
    /// <summary>
    /// KVM_GET_DIRTY_LOG: a sync fetches and clears the log in one atomic step per word and re-arms tracking of
    /// every page it returned.
    /// </summary>
    Eager,

    /// <summary>
    /// KVM_CLEAR_DIRTY_LOG with manual protect: a sync only fetches. A page whose bit is set stays un-armed (further
    /// writes are not logged again) until <see cref="DirtyLog.ClearChunk"/> re-arms it; the engine does that just
    /// before sending the pages of a chunk.
    /// </summary>
    Manual,
}
