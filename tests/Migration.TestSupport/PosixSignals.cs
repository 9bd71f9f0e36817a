using System.Runtime.InteropServices;

namespace Migration.TestSupport;

/// <summary>
/// Signals to a child process by number (Linux): .NET can only kill a process, and the tests need Ctrl+C, SIGTERM and
/// stop/continue too.
/// </summary>
public static partial class PosixSignals
{
    public const int Interrupt = 2;
    public const int Terminate = 15;
    public const int Continue = 18;
    public const int Stop = 19;

    public static void Send(int pid, int signal)
    {
        if (Native.kill(pid, signal) != 0)
        {
            throw new InvalidOperationException($"kill({pid}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    private static partial class Native
    {
        [LibraryImport("libc", SetLastError = true)]
        internal static partial int kill(int pid, int sig);
    }
}
