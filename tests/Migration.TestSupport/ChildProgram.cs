using System.Diagnostics;
using Migration.Shared.Hosting;

namespace Migration.TestSupport;

/// <summary>
/// One of this repository's programs run as a child process, its output lines kept as they arrive: for the tests that
/// hold the command lines to their contract (signals, exit codes, reports) and kill a source mid-migration. Killed on
/// dispose if still running. (The source program's <c>TargetProcess</c> is the long-lived target that waits until it
/// listens.)
/// </summary>
public sealed class ChildProgram : IAsyncDisposable
{
    private readonly Process _process;
    private readonly List<string> _output = [];
    private readonly SemaphoreSlim _newLine = new(0);

    private ChildProgram(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) => OnLine(e.Data);
        _process.ErrorDataReceived += (_, e) => OnLine(e.Data);
    }

    public int ProcessId => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>Standard output and standard error, interleaved as they arrived.</summary>
    public IReadOnlyList<string> Output
    {
        get
        {
            lock (_output)
            {
                return [.. _output];
            }
        }
    }

    /// <summary>Starts the source program with <paramref name="arguments"/> (the first names the subcommand).</summary>
    /// <param name="launcherIgnoresInterrupt">
    /// Start it as a launcher that ignores SIGINT would (a background job of a non-interactive shell): through a shell
    /// that ignores SIGINT, then execs. Ignored dispositions survive exec, so this is how the program starts when this
    /// process itself was started so (Linux).
    /// </param>
    /// <param name="resetInterrupt">
    /// Set SIGINT to its default for the program, whatever it inherited (the default): a test that sends SIGINT must
    /// not depend on how the test host was launched. False keeps what it inherited.
    /// </param>
    public static ChildProgram Source(IEnumerable<string> arguments, bool launcherIgnoresInterrupt = false,
        bool resetInterrupt = true) =>
        Start(BuiltPrograms.Locate("Source", "Migration.Source.dll", "MIGRATION_SOURCE_DLL"), arguments,
            launcherIgnoresInterrupt, resetInterrupt);

    /// <summary>Starts the target program with exactly <paramref name="arguments"/>, SIGINT at its default.</summary>
    public static ChildProgram Target(IEnumerable<string> arguments) =>
        Start(BuiltPrograms.Locate("Target", "Migration.Target.dll", "MIGRATION_TARGET_DLL"), arguments,
            launcherIgnoresInterrupt: false, resetInterrupt: true);

    /// <summary>
    /// Starts <c>dotnet <paramref name="dll"/></c> with exactly <paramref name="arguments"/>, SIGINT at its default
    /// (the benchmark's own helper processes).
    /// </summary>
    public static ChildProgram Dotnet(string dll, IEnumerable<string> arguments) =>
        Start(dll, arguments, launcherIgnoresInterrupt: false, resetInterrupt: true);

    private static ChildProgram Start(string dll, IEnumerable<string> arguments, bool launcherIgnoresInterrupt,
        bool resetInterrupt)
    {
        List<string> command = [];
        if (launcherIgnoresInterrupt)
        {
            // sh -c SCRIPT NAME ARGS...: "$@" is ARGS, the rest of this command line
            command.AddRange(["sh", "-c", "trap '' INT; exec \"$@\"", "sh"]);
        }

        if (resetInterrupt && OperatingSystem.IsLinux())
        {
            // A process started with SIGINT ignored gets no SIGINT handler from .NET, and passes the disposition on
            // to its children: a test host run as a background job of a script would otherwise start programs that
            // Ctrl+C cannot reach. (A shell cannot undo it: a signal ignored at its start stays ignored.)
            command.AddRange(["env", "--default-signal=INT"]);
        }

        command.AddRange(["dotnet", dll, .. arguments]);
        var psi = new ProcessStartInfo(command[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in command.Skip(1))
        {
            psi.ArgumentList.Add(a);
        }

        var process = Process.Start(psi) ?? throw new InvalidOperationException($"Could not start {dll}.");
        var child = new ChildProgram(process);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return child;
    }

    /// <summary>Whether any line so far contains <paramref name="text"/>.</summary>
    public bool Printed(string text) => Output.Any(l => l.Contains(text, StringComparison.Ordinal));

    /// <summary>Waits until a line contains <paramref name="text"/>; throws with the last lines on timeout.</summary>
    public async Task WaitForLineAsync(string text, TimeSpan timeout)
    {
        var watch = Stopwatch.StartNew();
        while (!Printed(text))
        {
            var left = timeout - watch.Elapsed;
            if (left <= TimeSpan.Zero || _process.HasExited)
            {
                if (Printed(text))
                {
                    return;
                }

                throw new TimeoutException($"the program never printed '{text}'" +
                    (_process.HasExited ? $" (it exited with {_process.ExitCode})" : "") + ": " +
                    string.Join(" | ", Output.TakeLast(10)));
            }

            await _newLine.WaitAsync(left < TimeSpan.FromMilliseconds(50) ? left : TimeSpan.FromMilliseconds(50))
                .ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Waits for the process to exit (and its output to drain); returns its exit code. On a timeout or cancellation
    /// the process is killed and the exception thrown.
    /// </summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout, CancellationToken ct = default)
    {
        try
        {
            await _process.WaitForExitAsync(ct).WaitAsync(timeout, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
        {
            Kill();
            throw;
        }

        _process.WaitForExit(); // the redirected output is drained too
        return _process.ExitCode;
    }

    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            Kill();
            await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException)
        {
            // Already gone.
        }

        _process.Dispose();
        _newLine.Dispose();
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.Add(line);
        }

        _newLine.Release();
    }
}
