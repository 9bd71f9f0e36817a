using System.IO.Hashing;
using System.Runtime.InteropServices;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;

namespace Migration.Shared.Verification;

/// <summary>
/// Digests of every page the guest does not consider free (in use, kernel, descriptors, reserved), in ascending page
/// order: XxHash64 of the page seeded with its page number, so identical content at the wrong address still differs.
/// Source and target compute the same list from their own RAM and kernel; DESIGN section 7's invariant is that they
/// are equal.
/// </summary>
public static unsafe class PageDigests
{
    /// <summary>
    /// Computes the digest list of the pages not set in <paramref name="free"/> (the kernel's
    /// <see cref="GuestKernel.FreePageMap"/>, taken once by the caller, who usually needs it too).
    /// Pages are hashed in parallel segments; the list order is page order.
    /// </summary>
    public static ulong[] Compute(GuestRam ram, PageBitmap free) => ComputeList(ram, free, 0, 0);

    /// <summary>
    /// The digest of one page: XxHash64 of its bytes seeded with its page number. (XXH3 is faster once optimised, but
    /// its first calls in a fresh process are about twice as slow, and each process here hashes in its first seconds.)
    /// </summary>
    public static ulong Hash(ReadOnlySpan<byte> page, long pfn) => XxHash64.HashToUInt64(page, pfn);

    /// <summary>
    /// <see cref="Compute(GuestRam, PageBitmap)"/> for a receiver that hashed pages as it wrote them: where
    /// <paramref name="known"/> is non-zero, <paramref name="digests"/> holds the digest of the page as it is in
    /// <paramref name="ram"/> (nothing has written the page since); other pages are hashed now. Same list, without
    /// rehashing all of RAM inside the downtime.
    /// </summary>
    public static ulong[] Compute(GuestRam ram, PageBitmap free, ReadOnlySpan<ulong> digests,
        ReadOnlySpan<byte> known)
    {
        ArgumentNullException.ThrowIfNull(ram);
        if (digests.Length != ram.PageCount || known.Length != ram.PageCount)
        {
            throw new ArgumentException($"digests for {digests.Length} pages, RAM has {ram.PageCount}",
                nameof(digests));
        }

        fixed (ulong* d = digests)
        fixed (byte* k = known)
        {
            return ComputeList(ram, free, (nint)d, (nint)k); // the hashing threads are done when it returns
        }
    }

    /// <param name="digests">A <c>ulong</c> a page, pinned, or 0 to hash every page.</param>
    /// <param name="known">A byte a page, pinned, non-zero where <paramref name="digests"/> holds the page's.</param>
    private static ulong[] ComputeList(GuestRam ram, PageBitmap free, nint digests, nint known)
    {
        ArgumentNullException.ThrowIfNull(ram);
        ArgumentNullException.ThrowIfNull(free);
        long pages = ram.PageCount;
        int segments = Math.Max(1, Environment.ProcessorCount * 4);
        long perSegment = (pages + segments - 1) / segments;
        var parts = new ulong[segments][];
        Parallel.For(0, segments, s =>
        {
            long first = s * perSegment;
            long end = Math.Min(pages, first + perSegment);
            var list = new List<ulong>();
            for (long p = first; p < end; p++)
            {
                if (!free.Get(p))
                {
                    list.Add(known != 0 && ((byte*)known)[p] != 0 ? ((ulong*)digests)[p] : Hash(ram.Page(p), p));
                }
            }

            parts[s] = [.. list];
        });

        return [.. parts.SelectMany(x => x)];
    }

    /// <summary>
    /// The digest list from digests taken as pages were written, without reading RAM: where <paramref name="known"/>
    /// is zero the page was never written or written as zero, so it holds zeros and gets the zero page's digest.
    /// </summary>
    public static ulong[] FromReceived(PageBitmap free, ReadOnlySpan<ulong> digests, ReadOnlySpan<byte> known)
    {
        ArgumentNullException.ThrowIfNull(free);
        if (digests.Length != free.PageCount || known.Length != free.PageCount)
        {
            throw new ArgumentException($"digests for {digests.Length} pages, the map has {free.PageCount}",
                nameof(digests));
        }

        ReadOnlySpan<byte> zero = stackalloc byte[PageGeometry.PageSize];
        var list = new ulong[free.PageCount - free.Count];
        long n = 0;
        for (int p = 0; p < known.Length; p++)
        {
            if (!free.Get(p))
            {
                list[n++] = known[p] != 0 ? digests[p] : Hash(zero, p);
            }
        }

        return list;
    }

    public static byte[] ToBytes(ulong[] digests) => MemoryMarshal.AsBytes(digests.AsSpan()).ToArray();

    public static ulong[] FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length % 8 != 0)
        {
            throw new InvalidDataException(
                $"Digest list of {bytes.Length} bytes is not a whole number of 8-byte digests.");
        }

        return MemoryMarshal.Cast<byte, ulong>(bytes).ToArray();
    }

    /// <summary>
    /// Compares the source's digests with the target's. Returns the number of mismatched positions (a length
    /// difference counts every missing or extra digest) and the first few mismatching pages of the target's list,
    /// located with the free-page map the target's digests were computed from.
    /// </summary>
    public static (long Mismatched, List<long> FirstMismatchedPages) Compare(ulong[] expected, ulong[] actual,
        PageBitmap targetFree, int keep = 10)
    {
        ArgumentNullException.ThrowIfNull(expected);
        ArgumentNullException.ThrowIfNull(actual);
        long mismatched = Math.Abs(expected.LongLength - actual.LongLength);
        var first = new List<long>();
        long n = Math.Min(expected.LongLength, actual.LongLength);
        long[]? inUse = null;
        for (long i = 0; i < n; i++)
        {
            if (expected[i] != actual[i])
            {
                mismatched++;
                if (first.Count < keep)
                {
                    inUse ??= InUsePages(targetFree);
                    first.Add(inUse[i]);
                }
            }
        }

        return (mismatched, first);
    }

    private static long[] InUsePages(PageBitmap free)
    {
        var list = new List<long>();
        for (long p = 0; p < free.PageCount; p++)
        {
            if (!free.Get(p))
            {
                list.Add(p);
            }
        }

        return [.. list];
    }
}
