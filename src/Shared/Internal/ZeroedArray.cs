using System.Runtime.InteropServices;

namespace Migration.Shared.Internal;

/// <summary>
/// A zeroed array of <typeparamref name="T"/> outside the GC heap, for tables with an entry per page of guest RAM. On
/// Linux it is an anonymous private <c>MAP_NORESERVE</c> mapping, as guest RAM is: making one costs the same at any
/// length, and the host backs a page of it only when that page is first written. A GC array of the same length is
/// zeroed as it is allocated, every page of it faulted in, though a receiver may write a few percent of it.
/// Elsewhere it is <c>calloc</c>'s.
/// </summary>
/// <remarks>
/// Not synchronised: its owner makes sure no span of it is in use when it is disposed. Its memory is freed by
/// <see cref="Dispose"/>, or by the handle's finalizer if the owner never disposes it.
/// </remarks>
internal sealed unsafe class ZeroedArray<T> : IDisposable where T : unmanaged
{
    private readonly ZeroedMemory _memory;

    private ZeroedArray(ZeroedMemory memory, int length)
    {
        _memory = memory;
        Length = length;
    }

    public int Length { get; }

    /// <summary>The whole array. Valid until <see cref="Dispose"/>.</summary>
    public Span<T> Span
    {
        get
        {
            ObjectDisposedException.ThrowIf(_memory.IsClosed, this);
            return new Span<T>((void*)_memory.DangerousGetHandle(), Length);
        }
    }

    /// <summary>An array of <paramref name="length"/> zeroes (at most <see cref="Array.MaxLength"/>).</summary>
    /// <exception cref="InsufficientMemoryException">The host would not map it.</exception>
    public static ZeroedArray<T> Allocate(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, Array.MaxLength);
        nuint bytes = Math.Max((nuint)length * (nuint)sizeof(T), 1);
        return new ZeroedArray<T>(ZeroedMemory.Allocate(bytes), (int)length);
    }

    public void Dispose() => _memory.Dispose();
}

/// <summary>The memory behind a <see cref="ZeroedArray{T}"/>: an anonymous mapping on Linux, else calloc's.</summary>
internal sealed partial class ZeroedMemory : SafeHandle
{
    private const int ProtRead = 0x1;
    private const int ProtWrite = 0x2;
    private const int MapPrivate = 0x02;
    private const int MapAnonymous = 0x20;
    private const int MapNoReserve = 0x4000;

    private nuint _bytes;
    private bool _mapped;

    /// <summary>For the marshaller (CA1419); <see cref="Allocate"/> makes real ones.</summary>
    public ZeroedMemory()
        : base(0, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == 0;

    public static unsafe ZeroedMemory Allocate(nuint bytes)
    {
        var memory = new ZeroedMemory { _bytes = bytes };
        if (OperatingSystem.IsLinux())
        {
            nint p = Mmap(0, bytes, ProtRead | ProtWrite, MapPrivate | MapAnonymous | MapNoReserve, -1, 0);
            if (p == -1)
            {
                throw new InsufficientMemoryException(
                    $"Could not map {bytes} bytes (errno {Marshal.GetLastPInvokeError()}).");
            }

            memory._mapped = true;
            memory.SetHandle(p);
            return memory;
        }

        memory.SetHandle((nint)NativeMemory.AllocZeroed(bytes));
        return memory;
    }

    protected override unsafe bool ReleaseHandle()
    {
        if (_mapped)
        {
            return Munmap(handle, _bytes) == 0;
        }

        NativeMemory.Free((void*)handle);
        return true;
    }

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial nint Mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int Munmap(nint addr, nuint length);
}
