using System.ComponentModel;
using System.Diagnostics;

namespace Migration.Bench.Peers;

/// <summary>
/// A program the benchmark compares against (iperf3, QEMU): found on PATH, or installed from Debian's packages when
/// the benchmark may (root, or sudo without a password). Otherwise null, and the caller reports why.
/// </summary>
internal static class DebianPackage
{
    public static string? Find(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(Path.PathSeparator)
            .Where(dir => dir.Length > 0)
            .Select(dir => Path.Combine(dir, program))
            .FirstOrDefault(File.Exists);

    /// <summary>The program's path, after installing <paramref name="package"/> if it was missing.</summary>
    public static async Task<string?> EnsureAsync(string program, string package, TextWriter output,
        CancellationToken ct) =>
        Find(program) ?? (await InstallAsync([package], program, output, ct) ? Find(program) : null);

    /// <summary>
    /// Installs those of <paramref name="packages"/> whose file (the key: a path, a path whose name has a <c>*</c>
    /// wildcard, or a program on PATH) is missing; true when every file is there afterwards.
    /// </summary>
    public static async Task<bool> EnsureFilesAsync(IReadOnlyDictionary<string, string> packages, TextWriter output,
        CancellationToken ct)
    {
        static bool Present(string file) => file switch
        {
            _ when file.Contains('*') => Directory.Exists(Path.GetDirectoryName(file))
                && Directory.EnumerateFiles(Path.GetDirectoryName(file)!, Path.GetFileName(file)).Any(),
            _ when file.Contains('/') => File.Exists(file),
            _ => Find(file) is not null,
        };

        var missing = packages.Where(p => !Present(p.Key)).ToList();
        return missing.Count == 0
            || (await InstallAsync([.. missing.Select(p => p.Value).Distinct()],
                    string.Join(", ", missing.Select(p => p.Key)), output, ct)
                && packages.Keys.All(Present));
    }

    private static async Task<bool> InstallAsync(string[] packages, string what, TextWriter output,
        CancellationToken ct)
    {
        string names = string.Join(' ', packages);
        if (!File.Exists("/usr/bin/apt-get"))
        {
            output.WriteLine($"bench: {what} missing and this is not a Debian system (apt-get install {names})");
            return false;
        }

        bool root = Environment.UserName == "root";
        output.WriteLine($"bench: {what} missing; installing the Debian package(s) {names}");
        string[][] steps =
        [
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", .. packages],
        ];
        foreach (string[] step in steps)
        {
            if (await RunAsync(step, root, output, ct) is false)
            {
                return false;
            }
        }

        return true;
    }

    private static async Task<bool> RunAsync(string[] step, bool root, TextWriter output, CancellationToken ct)
    {
        var psi = new ProcessStartInfo(root ? step[0] : "sudo")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.Environment["DEBIAN_FRONTEND"] = "noninteractive";
        if (!root)
        {
            psi.ArgumentList.Add("-n"); // never prompt: no password, no install
        }

        foreach (string a in root ? step[1..] : step)
        {
            psi.ArgumentList.Add(a);
        }

        return await RunQuietAsync(psi, string.Join(' ', step), output, ct);
    }

    /// <summary>
    /// Runs <paramref name="psi"/> (its output redirected) for at most 10 minutes; false, with a line naming
    /// <paramref name="what"/> and the process's stderr, unless it exits 0.
    /// </summary>
    internal static async Task<bool> RunQuietAsync(ProcessStartInfo psi, string what, TextWriter output,
        CancellationToken ct)
    {
        try
        {
            using var p = Process.Start(psi)!;
            _ = p.StandardOutput.ReadToEndAsync(ct);
            string err = await p.StandardError.ReadToEndAsync(ct);
            await p.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromMinutes(10), ct);
            if (p.ExitCode != 0)
            {
                output.WriteLine($"bench: {what} failed: {err.Trim()}");
                return false;
            }

            return true;
        }
        catch (Exception ex) when (ex is Win32Exception or TimeoutException)
        {
            output.WriteLine($"bench: could not run {what}: {ex.Message}");
            return false;
        }
    }
}
