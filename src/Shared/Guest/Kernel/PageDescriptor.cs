namespace Migration.Shared.Guest.Kernel;

/// <summary>What a page descriptor says a page is. Stored as one byte in guest RAM.</summary>
public enum PageState : byte
{
    /// <summary>
    /// Inside a block whose head describes it. Zero on purpose: a fresh descriptor array is all tails, and boot only
    /// writes heads, as Linux only marks the head <c>struct page</c> of a buddy block.
    /// </summary>
    Tail = 0,

    /// <summary>The kernel's own pages: the header page and the descriptor array.</summary>
    Kernel = 1,

    /// <summary>Reserved at boot (the <c>ab</c> workload's range), never handed to the allocator.</summary>
    Reserved = 2,

    /// <summary>Head of a free buddy block, linked into the free list of its order.</summary>
    FreeHead = 3,

    /// <summary>Head of an allocated block.</summary>
    AllocatedHead = 4,
}

/// <summary>Who allocated a block; kept in its head descriptor for the self-check and for diagnostics.</summary>
public enum PageOwner : byte
{
    None = 0,
    KernelData = 1,
    PageCache = 2,
    Anonymous = 3,
    TaskTable = 4,
    /// <summary>Free blocks the balloon driver holds while it hints them (free page hinting).</summary>
    Balloon = 5,

    /// <summary>Pages inflated into the balloon: given to the host, discarded there, not the guest's until deflated.</summary>
    BalloonInflated = 6,

    /// <summary>
    /// A free block isolated by free page reporting while the device has it (Linux's isolated buddy page): off the free
    /// list, not the guest's data, back on the list once the device acknowledged the report.
    /// </summary>
    Reporting = 7,
}

/// <summary>Descriptor flag bits.</summary>
[Flags]
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1711",
    Justification = "The descriptor's flags byte, named as Linux's page flags are.")]
public enum PageFlags : byte
{
    None = 0,

    /// <summary>Every page of the block starts with a <see cref="PageStamp"/> the self-check can verify.</summary>
    Stamped = 1,

    /// <summary>
    /// A free block the device has been told about by free page reporting (Linux's <c>PageReported</c>): the host may
    /// have discarded it. Such blocks sit at the tail of their free list and are not reported again; allocating or
    /// merging the block clears the flag.
    /// </summary>
    Reported = 2,
}

/// <summary>
/// Byte layout of one 16-byte page descriptor in the guest's descriptor array.
/// </summary>
/// <remarks>
/// <code>
/// 0 state (PageState)   1 order   2 flags (PageFlags)   3 owner (PageOwner)
/// 4 next free pfn (u32) 8 prev free pfn (u32)           12 generation (u32)
/// </code>
/// </remarks>
public readonly record struct PageDescriptor(PageState State, byte Order, PageFlags Flags, PageOwner Owner,
    uint Next, uint Prev, uint Generation)
{
    public const int Size = 16;
    public const int DescriptorsPerPage = PageGeometry.PageSize / Size;

    /// <summary>"No page" in a free-list link.</summary>
    public const uint NoPage = uint.MaxValue;

    internal const int StateOffset = 0;
    internal const int OrderOffset = 1;
    internal const int FlagsOffset = 2;
    internal const int OwnerOffset = 3;
    internal const int NextOffset = 4;
    internal const int PrevOffset = 8;
    internal const int GenerationOffset = 12;

    /// <summary>A descriptor from its two little-endian words, as stored.</summary>
    public static PageDescriptor Decode(ulong lo, ulong hi) =>
        new((PageState)(byte)lo, (byte)(lo >> 8), (PageFlags)(byte)(lo >> 16), (PageOwner)(byte)(lo >> 24),
            (uint)(lo >> 32), (uint)hi, (uint)(hi >> 32));
}
