using System.Runtime.InteropServices;

namespace Migration.Shared.Guest.Postcopy;

/// <summary>
/// One userfaultfd(2) in missing mode over a range of guest RAM: a thread that touches a page of the range that has no
/// memory behind it stops in the kernel, and this descriptor reads the fault; the page is placed whole and atomically
/// (<see cref="Copy"/>, <see cref="ZeroPage"/>), which wakes every thread waiting on it. Linux only.
/// </summary>
/// <remarks>
/// A placed page stays placed: the owner never discards a page of a registered range (a discarded page would fault
/// again). Placing a page twice fails the second time with "exists", which <see cref="Copy"/> reports and the caller
/// treats as done: the first placement stands (DESIGN P4 in docs/design.md: what the guest wrote since is never
/// overwritten).
/// </remarks>
public sealed unsafe partial class Userfaultfd : IDisposable
{
    /// <summary>What a fault read from the descriptor says.</summary>
    public readonly record struct Fault(ulong Address, bool Write, int ThreadId);

    /// <summary>How a placement ended.</summary>
    public enum Placement
    {
        /// <summary>Every byte of the range is placed now.</summary>
        Placed,

        /// <summary>A page of the range was already there; the bytes before it were placed (see the count).</summary>
        Exists,
    }

    private const long UffdApi = 0xAA;
    private const ulong FeatureThreadId = 1UL << 8;
    private const ulong RegisterModeMissing = 1;
    private const ulong IoctlWake = 1UL << 2;
    private const ulong IoctlCopy = 1UL << 3;
    private const ulong IoctlZeroPage = 1UL << 4;
    private const byte EventPageFault = 0x12;
    private const ulong PageFaultFlagWrite = 1;
    private const int MessageBytes = 32;

    // _IOWR(0xAA, nr, size) and _IOR(0xAA, nr, size) on Linux: dir << 30 | size << 16 | 0xAA << 8 | nr.
    private const ulong IocApi = 0xC018AA3F; // struct uffdio_api, 24 bytes
    private const ulong IocRegister = 0xC020AA00; // struct uffdio_register, 32 bytes
    private const ulong IocUnregister = 0x8010AA01; // struct uffdio_range, 16 bytes
    private const ulong IocWake = 0x8010AA02; // struct uffdio_range
    private const ulong IocCopy = 0xC028AA03; // struct uffdio_copy, 40 bytes
    private const ulong IocZeroPage = 0xC020AA04; // struct uffdio_zeropage, 32 bytes
    private const ulong IocNewFromDevice = 0xAA00; // USERFAULTFD_IOC_NEW on /dev/userfaultfd

    private const int OCloexec = 0x80000;
    private const int ONonblock = 0x800;
    private const int ORdwr = 2;
    private const int UserModeOnly = 1; // UFFD_USER_MODE_ONLY: faults from user space only (allowed unprivileged)
    private const int EIntr = 4;
    private const int EAgain = 11;
    private const int EExist = 17;
    private const int EInval = 22;
    private const short PollIn = 0x1;

    // Each call holds a reference on the descriptor it uses, so Dispose racing a placement closes it only after that
    // call, and no call ever reaches a descriptor number the process has since reused for something else.
    private readonly Descriptor _uffd;
    private readonly Descriptor _stop; // an eventfd: written by Interrupt, so a reader blocked in WaitForFaults returns

    private Userfaultfd(int fd, int stopFd)
    {
        _uffd = new Descriptor(fd);
        _stop = new Descriptor(stopFd);
    }

    /// <summary>
    /// Opens a userfaultfd: the system call first, then <c>/dev/userfaultfd</c>, which a non-root user may be given
    /// access to where the system call is refused.
    /// </summary>
    /// <exception cref="UserfaultfdUnavailableException">Neither way works here; the message names the cause and the fix.</exception>
    public static Userfaultfd Open()
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new UserfaultfdUnavailableException(
                "postcopy needs Linux's userfaultfd(2), and this host is not Linux; use precopy");
        }

        int fd = OpenBySystemCall(out int callErrno);
        int deviceErrno = 0;
        if (fd < 0)
        {
            fd = OpenByDevice(out deviceErrno);
        }

        if (fd < 0)
        {
            throw new UserfaultfdUnavailableException(Explain(callErrno, deviceErrno));
        }

        var api = stackalloc ulong[3] { (ulong)UffdApi, FeatureThreadId, 0 };
        if (Ioctl(fd, IocApi, api) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            _ = Close(fd);
            throw new UserfaultfdUnavailableException(
                $"the kernel refused userfaultfd's handshake (errno {errno}); postcopy needs Linux 4.14 or later");
        }

        int stop = EventFd(0, OCloexec | ONonblock);
        if (stop < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            _ = Close(fd);
            throw new IOException($"could not make an eventfd for the fault reader (errno {errno})");
        }

        return new Userfaultfd(fd, stop);
    }

    /// <summary>
    /// Registers <paramref name="length"/> bytes at <paramref name="start"/> (page-aligned, an anonymous private
    /// mapping) in missing mode.
    /// </summary>
    public void Register(nint start, nuint length)
    {
        var reg = stackalloc ulong[4] { (ulong)start, length, RegisterModeMissing, 0 };
        if (Ioctl(_uffd, IocRegister, reg) != 0)
        {
            throw new IOException(
                $"userfaultfd would not register {length} bytes (errno {Marshal.GetLastPInvokeError()})");
        }

        const ulong needed = IoctlWake | IoctlCopy | IoctlZeroPage;
        if ((reg[3] & needed) != needed)
        {
            throw new UserfaultfdUnavailableException(
                $"userfaultfd on this kernel cannot place pages in that range (ioctls 0x{reg[3]:x})");
        }
    }

    /// <summary>Stops handling faults in the range: a page with no memory then reads as zero again.</summary>
    public void Unregister(nint start, nuint length)
    {
        var range = stackalloc ulong[2] { (ulong)start, length };
        if (Ioctl(_uffd, IocUnregister, range) != 0)
        {
            throw new IOException($"userfaultfd would not unregister (errno {Marshal.GetLastPInvokeError()})");
        }
    }

    /// <summary>
    /// Places <paramref name="length"/> bytes from <paramref name="source"/> at <paramref name="destination"/> (whole
    /// pages of the registered range) and wakes the threads waiting on them. <paramref name="placedBytes"/> says how
    /// many bytes were placed before a page that was already there (<see cref="Placement.Exists"/>).
    /// </summary>
    public Placement Copy(nint destination, nint source, nuint length, out long placedBytes)
    {
        placedBytes = 0;
        var copy = stackalloc long[5];
        while (true)
        {
            copy[0] = destination;
            copy[1] = source;
            copy[2] = (long)length;
            copy[3] = 0;
            copy[4] = 0;
            if (Ioctl(_uffd, IocCopy, copy) == 0)
            {
                placedBytes += copy[4];
                return Placement.Placed;
            }

            int errno = Marshal.GetLastPInvokeError();
            long done = Math.Max(copy[4], 0);
            placedBytes += done;
            if (errno == EExist)
            {
                return Placement.Exists;
            }

            if (errno is EAgain or EIntr)
            {
                // Part of it may have gone in (the kernel stops at a page already there, or when the mapping changed
                // under the call, and says how far it got): go on from there; a page there answers EEXIST next time.
                destination += (nint)done;
                source += (nint)done;
                length -= (nuint)done;
                continue;
            }

            throw new IOException($"userfaultfd could not place {length} bytes at 0x{destination:x} (errno {errno})");
        }
    }

    /// <summary>Maps the zero page over whole pages of the range (no memory used until the guest writes one).</summary>
    public Placement ZeroPage(nint destination, nuint length)
    {
        var zero = stackalloc long[4];
        while (true)
        {
            zero[0] = destination;
            zero[1] = (long)length;
            zero[2] = 0;
            zero[3] = 0;
            if (Ioctl(_uffd, IocZeroPage, zero) == 0)
            {
                return Placement.Placed;
            }

            int errno = Marshal.GetLastPInvokeError();
            if (errno == EExist)
            {
                return Placement.Exists;
            }

            if (errno is EAgain or EIntr)
            {
                continue;
            }

            throw new IOException($"userfaultfd could not map zero pages at 0x{destination:x} (errno {errno})");
        }
    }

    /// <summary>Wakes threads waiting on pages of the range that are already placed.</summary>
    public void Wake(nint start, nuint length)
    {
        var range = stackalloc ulong[2] { (ulong)start, length };
        if (Ioctl(_uffd, IocWake, range) != 0)
        {
            throw new IOException($"userfaultfd would not wake (errno {Marshal.GetLastPInvokeError()})");
        }
    }

    /// <summary>
    /// Waits up to <paramref name="timeoutMs"/> (-1: until one comes or <see cref="Interrupt"/>) for faults and reads
    /// as many as <paramref name="into"/> holds. Returns how many; 0 after a timeout or an interrupt.
    /// </summary>
    public int WaitForFaults(Span<Fault> into, int timeoutMs)
    {
        bool uffdHeld = false;
        bool stopHeld = false;
        try
        {
            _uffd.DangerousAddRef(ref uffdHeld);
            _stop.DangerousAddRef(ref stopHeld);
            int fd = (int)_uffd.DangerousGetHandle();
            var polls = stackalloc PollFd[2];
            polls[0] = new PollFd { Fd = fd, Events = PollIn };
            polls[1] = new PollFd { Fd = (int)_stop.DangerousGetHandle(), Events = PollIn };
            int ready = Poll(polls, 2, timeoutMs);
            if (ready < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                return errno == EIntr ? 0 : throw new IOException($"poll on userfaultfd failed (errno {errno})");
            }

            if (polls[1].Revents != 0 || (polls[0].Revents & PollIn) == 0)
            {
                return 0; // interrupted, or timed out
            }

            int room = Math.Min(into.Length, 64);
            var buffer = stackalloc byte[room * MessageBytes];
            nint read = Read(fd, buffer, (nuint)(room * MessageBytes));
            if (read < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                return errno is EAgain or EIntr
                    ? 0
                    : throw new IOException($"reading userfaultfd failed (errno {errno})");
            }

            int n = 0;
            for (int i = 0; i < read / MessageBytes; i++)
            {
                byte* m = buffer + (i * MessageBytes);
                if (m[0] != EventPageFault)
                {
                    continue; // only page faults are asked for
                }

                ulong flags = *(ulong*)(m + 8);
                into[n++] = new Fault(*(ulong*)(m + 16), (flags & PageFaultFlagWrite) != 0, *(int*)(m + 24));
            }

            return n;
        }
        finally
        {
            if (stopHeld)
            {
                _stop.DangerousRelease();
            }

            if (uffdHeld)
            {
                _uffd.DangerousRelease();
            }
        }
    }

    /// <summary>Makes a <see cref="WaitForFaults"/> in progress, and every later one, return at once.</summary>
    public void Interrupt()
    {
        bool held = false;
        try
        {
            _stop.DangerousAddRef(ref held);
            ulong one = 1;
            _ = Write((int)_stop.DangerousGetHandle(), &one, 8);
        }
        catch (ObjectDisposedException)
        {
            // Disposed: nothing waits any more.
        }
        finally
        {
            if (held)
            {
                _stop.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Closes the descriptor once no call holds it: a thread still waiting on a page of the range is woken, and faults
    /// it in as zero.
    /// </summary>
    public void Dispose()
    {
        _uffd.Dispose();
        _stop.Dispose();
    }

    private static int Ioctl(Descriptor descriptor, ulong request, void* argument)
    {
        bool held = false;
        try
        {
            descriptor.DangerousAddRef(ref held); // throws ObjectDisposedException once disposed
            return Ioctl((int)descriptor.DangerousGetHandle(), request, argument);
        }
        finally
        {
            if (held)
            {
                descriptor.DangerousRelease();
            }
        }
    }

    private static int OpenBySystemCall(out int errno)
    {
        long number = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => 323,
            Architecture.Arm64 => 282,
            _ => -1,
        };
        if (number < 0)
        {
            errno = 38; // ENOSYS: no number known for this architecture
            return -1;
        }

        int fd = (int)Syscall(number, OCloexec | ONonblock | UserModeOnly);
        errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0;
        if (fd < 0 && errno == EInval)
        {
            // Before Linux 5.11 there is no user-mode-only flag: ask without it (a privileged caller gets one).
            fd = (int)Syscall(number, OCloexec | ONonblock);
            errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0;
        }

        return fd;
    }

    private static int OpenByDevice(out int errno)
    {
        int device = OpenFile("/dev/userfaultfd", ORdwr | OCloexec);
        if (device < 0)
        {
            errno = Marshal.GetLastPInvokeError();
            return -1;
        }

        int fd = Ioctl(device, IocNewFromDevice, (void*)(nint)(OCloexec | ONonblock | UserModeOnly));
        errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0;
        _ = Close(device);
        return fd;
    }

    internal static string Explain(int callErrno, int deviceErrno) => (callErrno, deviceErrno) switch
    {
        (1, _) or (13, _) => "postcopy needs userfaultfd(2), which this user may not use "
            + $"(system call: errno {callErrno}, /dev/userfaultfd: errno {deviceErrno}): run the target as root, set "
            + "the sysctl vm.unprivileged_userfaultfd=1, or give this user read-write access to /dev/userfaultfd",
        (38, _) => "postcopy needs userfaultfd(2), and this kernel was built without it (CONFIG_USERFAULTFD); "
            + "use precopy",
        _ => $"postcopy needs userfaultfd(2), which failed here (system call: errno {callErrno}, /dev/userfaultfd: "
            + $"errno {deviceErrno})",
    };

    /// <summary>A file descriptor closed when the last call holding it is done.</summary>
    private sealed class Descriptor : SafeHandle
    {
        public Descriptor(int fd)
            : base(-1, ownsHandle: true) => SetHandle(fd);

        public override bool IsInvalid => handle < 0;

        protected override bool ReleaseHandle() => Userfaultfd.Close((int)handle) == 0;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall(long number, long argument);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int Ioctl(int fd, ulong request, void* argument);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenFile(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    private static partial int EventFd(uint initial, int flags);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int Poll(PollFd* fds, ulong count, int timeoutMs);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint Read(int fd, void* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint Write(int fd, void* buffer, nuint count);
}
