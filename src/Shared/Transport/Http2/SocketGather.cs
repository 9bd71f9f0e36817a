using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Migration.Shared.Transport.Http2;

/// <summary>One piece of a gathered write: <c>struct iovec</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IoVector
{
    public byte* Base;
    public nuint Length;

    public IoVector(byte* start, int length)
    {
        Base = start;
        Length = (nuint)length;
    }
}

/// <summary>
/// Gathered writes straight from where the bytes are (guest RAM, a frame header, a batch header) into a TCP socket:
/// one <c>sendmsg</c> for a whole batch and its frame headers, as QEMU's multifd writes pages with <c>writev</c>. .NET's
/// <see cref="Socket"/> gathers only managed arrays, and guest RAM is a native mapping, hence the system call.
/// </summary>
internal static unsafe partial class SocketGather
{
    /// <summary>The most pieces one call takes (Linux's <c>UIO_MAXIOV</c>).</summary>
    public const int MaxVectors = 1024;

    private const int MsgNoSignal = 0x4000; // a closed peer is an error, not SIGPIPE
    private const int EINTR = 4;
    private const int EAGAIN = 11;

    /// <summary>
    /// Writes every byte of <paramref name="vectors"/> (which it consumes: entries are advanced as bytes go out). On a
    /// full send buffer it waits for room, polling <paramref name="aborted"/> every 100 ms. Throws
    /// <see cref="IOException"/> when the connection fails or <paramref name="aborted"/> says so.
    /// </summary>
    public static void SendAll(Socket socket, Span<IoVector> vectors, Func<bool> aborted)
    {
        int first = 0;
        while (first < vectors.Length)
        {
            if (vectors[first].Length == 0)
            {
                first++;
                continue;
            }

            int count = Math.Min(vectors.Length - first, MaxVectors);
            long sent;
            fixed (IoVector* iov = &vectors[first])
            {
                var message = new MessageHeader { Vectors = iov, VectorCount = (nuint)count };
                sent = (long)sendmsg(socket.SafeHandle, &message, MsgNoSignal);
            }

            if (sent < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == EINTR)
                {
                    continue;
                }

                if (errno != EAGAIN)
                {
                    throw new IOException($"sending to the target failed: {Marshal.GetPInvokeErrorMessage(errno)}",
                        new SocketException(errno));
                }

                while (!socket.Poll(TimeSpan.FromMilliseconds(100), SelectMode.SelectWrite))
                {
                    if (aborted())
                    {
                        throw new IOException("the connection was closed while a write waited for room");
                    }
                }

                continue;
            }

            for (; sent > 0; first++)
            {
                long length = (long)vectors[first].Length;
                if (sent < length)
                {
                    vectors[first].Base += sent;
                    vectors[first].Length -= (nuint)sent;
                    break;
                }

                sent -= length;
            }

            if (aborted())
            {
                throw new IOException("the connection was closed while a write was under way");
            }
        }
    }

    /// <summary><c>struct msghdr</c> (x86-64 and arm64 Linux layouts are the same).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct MessageHeader
    {
        public void* Name;
        public uint NameLength;
        public IoVector* Vectors;
        public nuint VectorCount;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint sendmsg(SafeHandle socket, MessageHeader* message, int flags);
}
