namespace Migration.Shared.Guest.Kernel;

/// <summary>A guest kernel invariant was broken by a caller (double free, bad block) or found broken in RAM.</summary>
public sealed class GuestKernelException : Exception
{
    public GuestKernelException(string message)
        : base(message)
    {
    }

    public GuestKernelException(string message, long pfn)
        : base(message) => Pfn = pfn;

    public GuestKernelException()
    {
    }

    public GuestKernelException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The page the problem is about, when there is one.</summary>
    public long? Pfn { get; }
}

/// <summary>The allocator has no free block of the requested order or larger.</summary>
public sealed class GuestOutOfMemoryException : Exception
{
    public GuestOutOfMemoryException(string message)
        : base(message)
    {
    }

    public GuestOutOfMemoryException()
    {
    }

    public GuestOutOfMemoryException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// An allocation found a byte in a free page that is not the poison value: something wrote freed memory.
/// </summary>
public readonly record struct PoisonViolation(long Pfn, int Offset, byte Expected, byte Found)
{
    public override string ToString() =>
        $"page {Pfn}: poison violation at offset {Offset} (expected 0x{Expected:x2}, found 0x{Found:x2})";
}
