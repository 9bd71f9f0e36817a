using System.Diagnostics;

namespace Migration.Source.Cli;

/// <summary>
/// One of this repository's programs run as a child process, its output lines kept as they arrive: for the tests that
/// hold the command lines to their contract (signals, exit codes, reports) and kill a source mid-migration. Killed on
/// dispose if still running. (<see cref="TargetProcess"/> is the long-lived target that waits until it listens.)
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
    public static ChildProgram Source(IEnumerable<string> arguments) =>
        Start(BuiltPrograms.Locate("Source", "Migration.Source.dll", "MIGRATION_SOURCE_DLL"), arguments);

    /// <summary>Starts the target program with exactly <paramref name="arguments"/>.</summary>
    public static ChildProgram Target(IEnumerable<string> arguments) =>
        Start(TargetProcess.LocateTargetDll(), arguments);

    private static ChildProgram Start(string dll, IEnumerable<string> arguments)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(dll);
        foreach (string a in arguments)
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
