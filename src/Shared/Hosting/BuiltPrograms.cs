namespace Migration.Shared.Hosting;

/// <summary>
/// Finds this repository's built programs, so a process (the demo, a test, the benchmark) can start another.
/// </summary>
internal static class BuiltPrograms
{
    /// <summary>
    /// The dll of <c>src/<paramref name="project"/></c> built in this build's configuration, or the path in the
    /// environment variable <paramref name="overrideVariable"/>.
    /// </summary>
    public static string Locate(string project, string dll, string overrideVariable) =>
        LocateIn(Path.Combine("src", project), dll, overrideVariable);

    /// <summary>
    /// The dll of the project in <paramref name="projectDirectory"/> (relative to the repository's root) built in this
    /// build's configuration, or the path in the environment variable <paramref name="overrideVariable"/>.
    /// </summary>
    public static string LocateIn(string projectDirectory, string dll, string overrideVariable)
    {
        string? overridePath = Environment.GetEnvironmentVariable(overrideVariable);
        if (!string.IsNullOrEmpty(overridePath))
        {
            return overridePath;
        }

        // This assembly lives in <repo>/<project dir>/bin/<Configuration>/<tfm>/; find the repository root by its
        // solution file and take the program from the same configuration.
        string baseDir = AppContext.BaseDirectory;
        char sep = Path.DirectorySeparatorChar;
        string configuration = baseDir.Contains($"{sep}Debug{sep}", StringComparison.Ordinal) ? "Debug" : "Release";
        for (var dir = new DirectoryInfo(baseDir); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Migration.sln")))
            {
                string path = Path.Combine(dir.FullName, projectDirectory, "bin", configuration, "net10.0", dll);
                return File.Exists(path)
                    ? path
                    : throw new FileNotFoundException(
                        $"{dll} is not built at {path}; build the solution first (dotnet build -c {configuration}).",
                        path);
            }
        }

        throw new FileNotFoundException(
            $"Cannot find Migration.sln above {baseDir} to locate {dll}; set {overrideVariable}.");
    }
}
