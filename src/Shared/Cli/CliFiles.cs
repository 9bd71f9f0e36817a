namespace Migration.Shared.Cli;

/// <summary>Files named on a command line, checked before anything starts: a bad path is a usage error, not a late failure.</summary>
public static class CliFiles
{
    /// <summary>Null when a file can be written at <paramref name="path"/> (it is tried, and removed if new), else why not.</summary>
    public static string? WritableProblem(string path, string option)
    {
        ArgumentNullException.ThrowIfNull(path);
        try
        {
            bool existed = File.Exists(path);
            using (new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite))
            {
            }

            if (!existed)
            {
                File.Delete(path);
            }

            return null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException
            or NotSupportedException)
        {
            return $"{option}: cannot write '{path}': {ex.Message}";
        }
    }

    /// <summary>A shared token from a file (surrounding white space dropped); throws <see cref="ArgumentException"/>.</summary>
    public static string ReadToken(string path, string option)
    {
        try
        {
            string token = File.ReadAllText(path).Trim();
            return token.Length > 0 ? token : throw new ArgumentException($"{option}: '{path}' is empty");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"{option}: cannot read '{path}': {ex.Message}", ex);
        }
    }

    /// <summary>Throws <see cref="ArgumentException"/> unless <paramref name="path"/> is a readable file.</summary>
    public static string Readable(string path, string option)
    {
        return File.Exists(path) ? path : throw new ArgumentException($"{option}: no such file '{path}'");
    }
}
