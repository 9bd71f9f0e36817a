using System.Globalization;
using System.Runtime.InteropServices;

namespace Migration.Shared.Cli;

/// <summary>
/// Ctrl+C and SIGTERM as a cancellation, not a kill: the first one cancels <see cref="Token"/> and keeps the process
/// alive so the command can wind down (a migration tells the target, resumes its guest, writes its report); a second
/// one ends the process at once. System.CommandLine's own handling would kill the process two seconds after the first.
/// </summary>
public static class ShutdownSignals
{
    /// <summary>SIGINT's number on Linux (the bit <c>1 &lt;&lt; (2 - 1)</c> of /proc's signal masks).</summary>
    private const int SigInt = 2;
    private static readonly CancellationTokenSource Requested = new();
    private static readonly List<PosixSignalRegistration> Registrations = [];
    private static readonly System.Runtime.CompilerServices.StrongBox<int> Signals = new();

    /// <summary>Cancelled at the first Ctrl+C or SIGTERM once <see cref="Install"/> ran.</summary>
    public static CancellationToken Token => Requested.Token;

    public static void Install()
    {
        lock (Registrations)
        {
            if (Registrations.Count > 0)
            {
                return;
            }

            foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM })
            {
                Registrations.Add(PosixSignalRegistration.Create(signal, OnSignal));
            }
        }
    }

    /// <summary>
    /// Whether this process was started with SIGINT ignored (Linux; elsewhere false). A shell starts its background
    /// jobs so when it has no job control (a script's <c>cmd &amp;</c>), children inherit it across exec, and .NET then
    /// installs no handler for it: Ctrl+C, or a SIGINT sent, does nothing. That disposition is the launcher's choice
    /// and is left alone; SIGTERM still cancels.
    /// </summary>
    public static bool InterruptIgnored
    {
        get
        {
            const string Field = "SigIgn:";
            try
            {
                foreach (string line in File.ReadLines("/proc/self/status"))
                {
                    if (line.StartsWith(Field, StringComparison.Ordinal))
                    {
                        ulong ignored = ulong.Parse(line.AsSpan(Field.Length).Trim(),
                            NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                        return (ignored & (1UL << (SigInt - 1))) != 0;
                    }
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException
                or OverflowException)
            {
                // no /proc (not Linux) or an unexpected format: cannot tell, so say nothing
            }

            return false;
        }
    }

    /// <summary>
    /// For a command that winds down on Ctrl+C: a warning on <paramref name="error"/> when SIGINT is ignored
    /// (<see cref="InterruptIgnored"/>), so that a Ctrl+C that does nothing is not a surprise.
    /// </summary>
    public static void WarnIfInterruptIgnored(TextWriter error)
    {
        ArgumentNullException.ThrowIfNull(error);
        if (InterruptIgnored)
        {
            error.WriteLine("warning: SIGINT is ignored (inherited from the launcher, as in a background job of a " +
                $"script): Ctrl+C will not stop this process; use SIGTERM (kill {Environment.ProcessId})");
        }
    }

    private static void OnSignal(PosixSignalContext context)
    {
        if (Interlocked.Increment(ref Signals.Value) == 1)
        {
            context.Cancel = true; // keep running: the command winds down
            Console.Error.WriteLine($"{context.Signal}: stopping (again to stop at once)");
            Requested.Cancel();
        }
    }
}
