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
    /// Largest guest we boot. Page numbers are stored as 32-bit values in the guest kernel's descriptors,
    /// and the benchmark's biggest scenario is 8 GiB; 16 GiB leaves headroom without pretending to scale further.
    /// </summary>
    public const long MaxRamBytes = 16L << 30;

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
