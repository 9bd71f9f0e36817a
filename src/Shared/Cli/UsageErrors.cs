using System.CommandLine;

namespace Migration.Shared.Cli;

/// <summary>
/// The parse step both programs share: a bad command line is a usage error with the parser's messages.
/// </summary>
public static class UsageErrors
{
    /// <summary>The exit code of a usage error: nothing was started.</summary>
    public const int ExitCode = 2;

    /// <summary>
    /// Parses; on errors prints them and returns <see cref="ExitCode"/>, else runs the chosen command.
    /// </summary>
    public static async Task<int> ParseAndRunAsync(RootCommand root, string[] args)
    {
        ArgumentNullException.ThrowIfNull(root);
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var error in parse.Errors)
            {
                await Console.Error.WriteLineAsync($"error: {error.Message}").ConfigureAwait(false);
            }

            await Console.Error.WriteLineAsync("see --help for usage").ConfigureAwait(false);
            return ExitCode;
        }

        // Termination signals are ShutdownSignals' to handle: the commands wind down instead of being killed.
        ShutdownSignals.Install();
        return await parse.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null })
            .ConfigureAwait(false);
    }

    /// <summary>
    /// A usage error found after parsing (a bad combination of values): prints it, returns the exit code.
    /// </summary>
    public static int Report(string message)
    {
        Console.Error.WriteLine($"error: {message}");
        Console.Error.WriteLine("see --help for usage");
        return ExitCode;
    }
}
