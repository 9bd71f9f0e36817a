using System.Diagnostics;
using Migration.Source.Cli;

namespace Migration.Bench;

/// <summary>A source process (<c>migrate</c>, run by the dotnet host) whose output goes to a log file.</summary>
internal static class ChildProcess
{
    /// <summary>
    /// Runs <c>dotnet Migration.Source.dll args</c>; returns the exit code, or throws TimeoutException after killing
    /// it.
    /// </summary>
    public static async Task<int> RunSourceAsync(IReadOnlyList<string> args, string logPath, TimeSpan timeout,
        CancellationToken ct)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(BuiltPrograms.Locate("Source", "Migration.Source.dll", "MIGRATION_SOURCE_DLL"));
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        await using var log = new StreamWriter(logPath) { AutoFlush = true };
        using var process = Process.Start(psi)
            ?? throw new InvalidOperationException("Could not start the source process.");
        var gate = new object();
        void Write(string? line)
        {
            if (line is not null)
            {
                lock (gate)
                {
                    log.WriteLine(line);
                }
            }
        }

        process.OutputDataReceived += (_, e) => Write(e.Data);
        process.ErrorDataReceived += (_, e) => Write(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            await process.WaitForExitAsync(ct).WaitAsync(timeout, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            throw;
        }

        process.WaitForExit(); // drains the redirected output
        return process.ExitCode;
    }
}
