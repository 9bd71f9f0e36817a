using System.Runtime.InteropServices;
using Migration.Shared.Internal;

namespace Migration.Shared.Tests.Internal;

/// <summary>
/// The per-page tables of a receiving target: zero, as long as guest RAM has pages, and backed by the host only where
/// they are written, so making them costs the same for a 1 GiB guest as for a 1 TiB one.
/// </summary>
public sealed partial class ZeroedArrayTests
{
    [Fact]
    public void AnArrayOfAnyLength_ReadsAsZero_AndHoldsWhatIsWritten()
    {
        using var array = ZeroedArray<ulong>.Allocate(1 << 20);
        Assert.Equal(1 << 20, array.Length);
        Assert.False(array.Span.ContainsAnyExcept(0UL));
        array.Span[12345] = 0xfeed;
        Assert.Equal(0xfeedUL, array.Span[12345]);
        Assert.Equal(0UL, array.Span[12344]);
        using var empty = ZeroedArray<byte>.Allocate(0);
        Assert.True(empty.Span.IsEmpty);
    }

    [Fact]
    public void ADisposedArray_RefusesItsSpan()
    {
        var array = ZeroedArray<uint>.Allocate(16);
        array.Dispose();
        array.Dispose();
        Assert.Throws<ObjectDisposedException>(() => array.Span.Length);
    }

    [Fact]
    public unsafe void ALargeArray_IsBackedOnlyWhereWritten()
    {
        // The tables of a 1 TiB guest's digests: 2 GiB of address space. Two pages of it written.
        using var array = ZeroedArray<ulong>.Allocate(1L << 28);
        Span<ulong> span = array.Span;
        span[0] = 1;
        span[^1] = 1;

        long bytes = (long)span.Length * sizeof(ulong);
        long pages = bytes / Environment.SystemPageSize;
        var resident = new byte[pages];
        fixed (ulong* start = span)
        fixed (byte* vector = resident)
        {
            Assert.Equal(0, Mincore((nint)start, (nuint)bytes, vector));
        }

        long backed = resident.LongCount(r => (r & 1) != 0);
        // At most the two huge pages around them: the host's khugepaged may back a whole 2 MiB range around a written
        // page. A GC array of this length would be backed all through (zeroed as it is allocated).
        Assert.True(backed <= 2 * (2L << 20) / Environment.SystemPageSize,
            $"{backed} of {pages} pages are backed after two writes");
    }

    [LibraryImport("libc", EntryPoint = "mincore", SetLastError = true)]
    private static unsafe partial int Mincore(nint address, nuint length, byte* vector);
}
