using System.Runtime.InteropServices;
using Migration.Shared.Guest.Postcopy;
using Migration.Shared.Internal;

namespace Migration.Shared.Guest;

/// <summary>
/// The guest's physical memory: one native block of <c>pages x 4096</c> bytes that never moves.
/// </summary>
/// <remarks>
/// On Linux the block is an anonymous private mapping with <c>MAP_NORESERVE</c>: untouched pages cost nothing and
/// read as zero, like a fresh VM's RAM, so an 8 GiB guest whose free memory was never written stays small in RSS on
/// both sides. Elsewhere it falls back to zeroed native memory.
/// <para>
/// This type is the host's raw view (migration reads, target writes). Guest stores go through
/// <see cref="GuestMemory"/>, which also feeds dirty tracking.
/// </para>
/// </remarks>
public sealed unsafe partial class GuestRam : IDisposable
{
    private byte* _base;
    private readonly bool _mapped;

    private GuestRam(byte* @base, long pageCount, bool mapped)
    {
        _base = @base;
        PageCount = pageCount;
        _mapped = mapped;
    }

    public long PageCount { get; }

    public long SizeBytes => PageCount << PageGeometry.PageShift;

    /// <summary>Base address of guest-physical address 0. Valid until <see cref="Dispose"/>.</summary>
    public byte* BasePointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(_base == null, this);
            return _base;
        }
    }

    /// <summary>
    /// Allocates zeroed guest RAM of <paramref name="bytes"/> bytes (validated, see <see cref="PageGeometry"/>).
    /// </summary>
    public static GuestRam Allocate(long bytes)
    {
        long pages = PageGeometry.ValidateRamBytes(bytes);
        if (OperatingSystem.IsLinux())
        {
            nint p = Native.mmap(0, (nuint)bytes, Native.ProtRead | Native.ProtWrite,
                Native.MapPrivate | Native.MapAnonymous | Native.MapNoReserve, -1, 0);
            if (p == -1)
            {
                throw new InsufficientMemoryException(
                    $"Could not map {bytes} bytes of guest RAM (errno {Marshal.GetLastPInvokeError()}).");
            }

            // Transparent huge pages where the host allows them: one fault per 2 MiB instead of 512, and no TLB
            // shootdown per 4 KiB copy-on-write of the zero page when a page is first read, then written.
            _ = Native.madvise(p, (nuint)bytes, Native.MadvHugePage);
            return new GuestRam((byte*)p, pages, mapped: true);
        }

        var block = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, PageGeometry.PageSize);
        NativeMemory.Clear(block, (nuint)bytes);
        return new GuestRam(block, pages, mapped: false);
    }

    /// <summary>
    /// Backs every page with memory now (what QEMU's <c>-mem-prealloc</c> does), so receiving a guest does not pay a
    /// page fault per first write. Contents stay zero. Returns the milliseconds it took.
    /// </summary>
    public double Populate()
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        if (!_mapped || Native.madvise((nint)_base, (nuint)SizeBytes, Native.MadvPopulateWrite) != 0)
        {
            // Kernels before 5.14 lack MADV_POPULATE_WRITE: touch each page (writing zero keeps it zero).
            for (long p = 0; p < PageCount; p++)
            {
                Volatile.Write(ref _base[p << PageGeometry.PageShift], (byte)0);
            }
        }

        return System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds;
    }

    /// <summary>Host view of one page (during postcopy, once the page is there: <see cref="EnsurePresent(long)"/>).</summary>
    public Span<byte> Page(long pfn)
    {
        CheckPage(pfn);
        EnsurePresent(pfn);
        return new Span<byte>(_base + (pfn << PageGeometry.PageShift), PageGeometry.PageSize);
    }

    /// <summary>Host view of <paramref name="count"/> consecutive pages (at most 2 GiB - 1 page at a time).</summary>
    public Span<byte> Pages(long firstPfn, int count)
    {
        CheckRange(firstPfn, count);
        EnsurePresent(firstPfn, count);
        return new Span<byte>(_base + (firstPfn << PageGeometry.PageShift), checked(count * PageGeometry.PageSize));
    }

    /// <summary>Pointer to a page for the copy paths that must not go through spans (native copies, hashing).</summary>
    public byte* PagePointer(long pfn)
    {
        CheckPage(pfn);
        EnsurePresent(pfn);
        return _base + (pfn << PageGeometry.PageShift);
    }

    /// <summary>
    /// Returns a range of pages to the zero state and releases their memory (a discarded target guest, a reset).
    /// During postcopy the pages are zeroed and kept mapped (<see cref="PostcopyRam.Discard"/>): a released page would
    /// be missing again, and a fault on it would ask the source for bytes the guest has since thrown away.
    /// </summary>
    public void Discard(long firstPfn, long count)
    {
        CheckRange(firstPfn, count);
        byte* start = _base + (firstPfn << PageGeometry.PageShift);
        nuint length = (nuint)(count << PageGeometry.PageShift);
        if (_postcopy is { } postcopy)
        {
            for (long p = firstPfn; p < firstPfn + count; p++)
            {
                postcopy.Discard(p);
            }

            return;
        }

        if (_mapped && Native.madvise((nint)start, length, Native.MadvDontNeed) == 0)
        {
            return;
        }

        NativeMemory.Clear(start, length);
    }

    /// <summary>
    /// For postcopy: drops the pages of a range, which must be inside a registered userfaultfd range, so the next
    /// touch of each faults. Unlike <see cref="Discard"/> it never falls back to zeroing (a zeroed page is mapped and
    /// would never fault), and fails instead.
    /// </summary>
    internal void DropForPostcopy(long firstPfn, long count)
    {
        CheckRange(firstPfn, count);
        if (!_mapped || Native.madvise((nint)(_base + (firstPfn << PageGeometry.PageShift)),
                (nuint)(count << PageGeometry.PageShift), Native.MadvDontNeed) != 0)
        {
            throw new IOException(
                $"could not drop pages {firstPfn}..{firstPfn + count - 1} for postcopy (errno {Marshal.GetLastPInvokeError()})");
        }
    }

    /// <summary>
    /// Tells the host kernel a discarded range will be used again (a deflated balloon range): it may read ahead or
    /// back it early. Contents are unchanged (zero after a discard). Best effort: a refusal is not an error.
    /// </summary>
    public void WillNeed(long firstPfn, long count)
    {
        CheckRange(firstPfn, count);
        if (_mapped)
        {
            _ = Native.madvise((nint)(_base + (firstPfn << PageGeometry.PageShift)),
                (nuint)(count << PageGeometry.PageShift), Native.MadvWillNeed);
        }
    }

    public void CheckPage(long pfn)
    {
        if ((ulong)pfn >= (ulong)PageCount)
        {
            ThrowHelper.PageOutOfRange(pfn, PageCount);
        }
    }

    public void CheckRange(long firstPfn, long count)
    {
        if (firstPfn < 0 || count < 0 || firstPfn > PageCount - count)
        {
            ThrowHelper.RangeOutOfRange(firstPfn, count, PageCount);
        }
    }

    public void Dispose()
    {
        byte* p = _base;
        if (p == null)
        {
            return;
        }

        _base = null;
        if (_mapped)
        {
            _ = Native.munmap((nint)p, (nuint)SizeBytes);
        }
        else
        {
            NativeMemory.AlignedFree(p);
        }
    }

    private static partial class Native
    {
        public const int ProtRead = 0x1;
        public const int ProtWrite = 0x2;
        public const int MapPrivate = 0x02;
        public const int MapAnonymous = 0x20;
        public const int MapNoReserve = 0x4000;
        public const int MadvWillNeed = 3;
        public const int MadvDontNeed = 4;
        public const int MadvHugePage = 14;
        public const int MadvPopulateWrite = 23;

        [LibraryImport("libc", SetLastError = true)]
        public static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

        [LibraryImport("libc", SetLastError = true)]
        public static partial int munmap(nint addr, nuint length);

        [LibraryImport("libc", SetLastError = true)]
        public static partial int madvise(nint addr, nuint length, int advice);
    }
}
