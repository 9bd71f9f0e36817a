using System.Runtime.InteropServices;

namespace Migration.Shared.Cli;

/// <summary>
/// Ctrl+C and SIGTERM as a cancellation, not a kill: the first one cancels <see cref="Token"/> and keeps the process
/// alive so the command can wind down (a migration tells the target, resumes its guest, writes its report); a second
/// one ends the process at once. System.CommandLine's own handling would kill the process two seconds after the first.
/// </summary>
public static class ShutdownSignals
{
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
