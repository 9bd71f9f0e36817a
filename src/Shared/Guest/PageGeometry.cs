namespace Migration.Shared.Guest;

/// <summary>Page size facts shared by the guest, the dirty log and the wire format.</summary>
public static class PageGeometry
{
    /// <summary>4 KiB pages, as x86 guests and KVM's dirty log use.</summary>
    public const int PageSize = 4096;

    public const int PageShift = 12;

    /// <summary>Smallest guest we boot: the kernel needs a header page, descriptors and room to allocate.</summary>
    public const long MinRamBytes = 4L << 20;

    /// <summary>
    /// Largest guest we boot: 1 TiB. Page numbers are 32-bit in the guest kernel's descriptors (16 TiB), and guest RAM
    /// is an anonymous mapping on both sides, so what the host needs is the memory the guest touches (an idle guest,
    /// about 6%), not its size; the scale benchmark runs up to 128 GiB. The target's per-page bookkeeping is 13 bytes
    /// a page (3.25 GiB for 1 TiB), zero-filled on demand like the RAM.
    /// </summary>
    public const long MaxRamBytes = 1L << 40;

    public static long PagesFor(long bytes) => bytes >> PageShift;

    /// <summary>
    /// Checks a requested RAM size and returns its page count, or throws a message a user can act on.
    /// </summary>
    public static long ValidateRamBytes(long bytes)
    {
        if (bytes < MinRamBytes || bytes > MaxRamBytes)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes,
                $"Guest RAM must be between {MinRamBytes >> 20} MiB and {MaxRamBytes >> 30} GiB; got {bytes} bytes.");
        }

        if ((bytes & (PageSize - 1)) != 0)
        {
            throw new ArgumentException(
                $"Guest RAM must be a whole number of {PageSize}-byte pages; got {bytes} bytes.", nameof(bytes));
        }

        return bytes >> PageShift;
    }
}
