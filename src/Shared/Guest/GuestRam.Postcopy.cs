using System.Runtime.CompilerServices;
using Migration.Shared.Guest.Postcopy;

namespace Migration.Shared.Guest;

/// <summary>
/// The guard every access to guest RAM passes while postcopy fills it (<see cref="PostcopyRam"/>): a page not yet
/// known to be there is first touched from native code, so the thread waits for it in the kernel outside managed code.
/// </summary>
/// <remarks>
/// Why: a managed thread stopped in the kernel on a missing page, inside managed code, cannot be suspended for a
/// garbage collection until its page arrives, and the page arrives only through managed code (the fault thread, the
/// return path) that a pending collection stops in turn. Touched through a native call, the waiting thread is in
/// preemptive mode, which a collection does not wait for. Pages only ever go from missing to there during postcopy,
/// so a page seen there once needs the guard no more.
/// </remarks>
public sealed unsafe partial class GuestRam
{
    private volatile PostcopyRam? _postcopy;

    /// <summary>The postcopy filling this RAM, or null (the guard then costs one load).</summary>
    public PostcopyRam? Postcopy => _postcopy;

    /// <summary>
    /// Returns once page <paramref name="pfn"/> is there to be read and written without a fault: at once outside
    /// postcopy or for a page already seen; otherwise after waiting for it outside managed code.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void EnsurePresent(long pfn)
    {
        if (_postcopy is { } postcopy)
        {
            postcopy.EnsurePresent(pfn);
        }
    }

    /// <summary>As <see cref="EnsurePresent(long)"/> for every page of a range.</summary>
    public void EnsurePresent(long firstPfn, long count)
    {
        if (_postcopy is { } postcopy)
        {
            for (long p = firstPfn; p < firstPfn + count; p++)
            {
                postcopy.EnsurePresent(p);
            }
        }
    }

    internal void AttachPostcopy(PostcopyRam postcopy)
    {
        if (Interlocked.CompareExchange(ref _postcopy, postcopy, null) is not null)
        {
            throw new InvalidOperationException("this RAM is already being filled by a postcopy");
        }
    }

    internal void DetachPostcopy(PostcopyRam postcopy) =>
        _ = Interlocked.CompareExchange(ref _postcopy, null, postcopy);
}
