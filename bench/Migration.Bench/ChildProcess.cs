using Migration.TestSupport;

namespace Migration.Bench;

/// <summary>A source process (<c>migrate</c>, run by the dotnet host) whose output goes to a log file.</summary>
internal static class ChildProcess
{
    /// <summary>
    /// Runs <c>dotnet Migration.Source.dll args</c>; returns the exit code, or throws TimeoutException after killing
    /// it. The log is written either way.
    /// </summary>
    public static async Task<int> RunSourceAsync(IReadOnlyList<string> args, string logPath, TimeSpan timeout,
        CancellationToken ct)
    {
        await using var source = ChildProgram.Source(args);
        try
        {
            return await source.WaitForExitAsync(timeout, ct).ConfigureAwait(false);
        }
        finally
        {
            await File.WriteAllLinesAsync(logPath, source.Output, CancellationToken.None).ConfigureAwait(false);
        }
    }
}
