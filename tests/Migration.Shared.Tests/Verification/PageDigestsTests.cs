using Migration.Shared.Guest.Kernel;
using Migration.TestSupport;
using Migration.Shared.Verification;

namespace Migration.Shared.Tests.Verification;

public sealed class PageDigestsTests
{
    [Fact]
    public void DigestsTakenAsPagesWereWritten_GiveTheSameListAsRehashingRam()
    {
        using var guest = new TestGuest();
        for (int i = 0; i < 200; i++)
        {
            long pfn = guest.Kernel.TryAllocate(i % 3, PageOwner.Anonymous, stamp: true);
            guest.Memory.FillPagePattern(pfn, (ulong)i + 1, PageStamp.DataOffset);
        }

        var free = guest.Kernel.FreePageMap();
        ulong[] full = PageDigests.Compute(guest.Ram, free);

        // A receiver that hashed every other in-use page as it wrote it; the rest are hashed at the end.
        long pages = guest.Ram.PageCount;
        var digests = new ulong[pages];
        var known = new byte[pages];
        for (long p = 0; p < pages; p += 2)
        {
            digests[p] = PageDigests.Hash(guest.Ram.Page(p), p);
            known[p] = 1;
        }

        Assert.Equal(full, PageDigests.Compute(guest.Ram, free, digests, known));
    }

    [Fact]
    public void DigestsFromReceivedPagesAlone_MatchRehashingRam_WhenUnwrittenPagesAreZero()
    {
        using var guest = new TestGuest();
        for (int i = 0; i < 100; i++)
        {
            long pfn = guest.Kernel.TryAllocate(i % 2, PageOwner.Anonymous, stamp: true);
            guest.Memory.FillPagePattern(pfn, (ulong)i + 7, PageStamp.DataOffset);
        }

        var free = guest.Kernel.FreePageMap();
        long pages = guest.Ram.PageCount;
        var digests = new ulong[pages];
        var known = new byte[pages];
        for (long p = 0; p < pages; p++)
        {
            if (guest.Ram.Page(p).ContainsAnyExcept((byte)0))
            {
                digests[p] = PageDigests.Hash(guest.Ram.Page(p), p);
                known[p] = 1; // what a receiver knows: every page that arrived with data
            }
        }

        Assert.Equal(PageDigests.Compute(guest.Ram, free), PageDigests.FromReceived(free, digests, known));

        // A page that arrived with data but is recorded as never written gets the zero page's digest: a mismatch.
        long written = Array.FindIndex(known, k => k != 0);
        known[written] = 0;
        Assert.NotEqual(PageDigests.Compute(guest.Ram, free), PageDigests.FromReceived(free, digests, known));
    }

    [Fact]
    public void AKnownDigestThatNoLongerMatchesRam_IsWhatGetsCompared()
    {
        // The incremental list trusts the digest taken at write time: that is its contract (only the receive path
        // writes RAM before the VM exists). This pins that a stale known digest is reported as a mismatch against the
        // source's list rather than silently replaced by a rehash.
        using var guest = new TestGuest();
        long pfn = guest.Kernel.TryAllocate(0, PageOwner.Anonymous, stamp: true);
        guest.Memory.FillPagePattern(pfn, 7, PageStamp.DataOffset);
        var free = guest.Kernel.FreePageMap();
        ulong[] source = PageDigests.Compute(guest.Ram, free);
        var digests = new ulong[guest.Ram.PageCount];
        var known = new byte[guest.Ram.PageCount];
        digests[pfn] = PageDigests.Hash(guest.Ram.Page(pfn), pfn) ^ 1;
        known[pfn] = 1;
        var (mismatched, first) = PageDigests.Compare(source, PageDigests.Compute(guest.Ram, free, digests, known),
            free);
        Assert.Equal(1, mismatched);
        Assert.Equal([pfn], first);
    }
}
