namespace Migration.Shared.Guest.Kernel;

/// <summary>
/// Where the guest kernel keeps things in guest RAM: the header page at page 0, then the descriptor array, and an
/// optional range reserved at boot (the <c>ab</c> workload's). Everything else is managed by the buddy allocator.
/// </summary>
/// <remarks>
/// The descriptor array sits right after the header page unless that would overlap the reserved range, in which case
/// it moves above the range. That keeps the reservation at its fixed guest-physical address (1 MiB for <c>ab</c>,
/// as QEMU's migration test expects) on any RAM size.
/// </remarks>
public sealed record KernelLayout(long PageCount, long DescriptorFirstPfn, long DescriptorPages,
    long ReservedFirstPfn, long ReservedPages)
{
    public const long HeaderPfn = 0;

    public static KernelLayout Compute(long pageCount, long reservedFirstPfn = 0, long reservedPages = 0)
    {
        long descriptorPages = (pageCount + PageDescriptor.DescriptorsPerPage - 1) / PageDescriptor.DescriptorsPerPage;
        if (reservedPages < 0 || (reservedPages > 0 && reservedFirstPfn <= HeaderPfn))
        {
            throw new ArgumentOutOfRangeException(nameof(reservedFirstPfn), reservedFirstPfn,
                "A reserved range must start above the kernel header page.");
        }

        long first = 1;
        if (reservedPages > 0 && first + descriptorPages > reservedFirstPfn)
        {
            first = reservedFirstPfn + reservedPages;
        }

        long end = Math.Max(first + descriptorPages, reservedFirstPfn + reservedPages);
        // Leave at least one 4 MiB block's worth of pages for the allocator, or the guest cannot run anything.
        if (end + (1 << GuestKernel.MaxOrder) > pageCount)
        {
            throw new ArgumentException(
                $"A {pageCount}-page guest cannot hold the kernel ({descriptorPages} descriptor pages) " +
                $"and a {reservedPages}-page reservation with room left to allocate; " +
                "give it more RAM or reserve less.");
        }

        return new KernelLayout(pageCount, first, descriptorPages, reservedFirstPfn, reservedPages);
    }

    public bool IsKernelPage(long pfn) =>
        pfn == HeaderPfn || (pfn >= DescriptorFirstPfn && pfn < DescriptorFirstPfn + DescriptorPages);

    public bool IsReservedPage(long pfn) =>
        ReservedPages > 0 && pfn >= ReservedFirstPfn && pfn < ReservedFirstPfn + ReservedPages;

    public bool IsManagedPage(long pfn) => pfn >= 0 && pfn < PageCount && !IsKernelPage(pfn) && !IsReservedPage(pfn);

    /// <summary>Guest-physical address of page <paramref name="pfn"/>'s descriptor.</summary>
    public long DescriptorAddress(long pfn) =>
        (DescriptorFirstPfn << PageGeometry.PageShift) + (pfn * PageDescriptor.Size);

    /// <summary>
    /// The managed extents in ascending order: what is left after the header, descriptors and reservation.
    /// </summary>
    public IEnumerable<(long First, long Count)> ManagedExtents()
    {
        var taken = new List<(long First, long End)>
        {
            (HeaderPfn, HeaderPfn + 1),
            (DescriptorFirstPfn, DescriptorFirstPfn + DescriptorPages),
        };
        if (ReservedPages > 0)
        {
            taken.Add((ReservedFirstPfn, ReservedFirstPfn + ReservedPages));
        }

        taken.Sort();
        long cursor = 0;
        foreach (var (first, end) in taken)
        {
            if (first > cursor)
            {
                yield return (cursor, first - cursor);
            }

            cursor = Math.Max(cursor, end);
        }

        if (cursor < PageCount)
        {
            yield return (cursor, PageCount - cursor);
        }
    }
}
