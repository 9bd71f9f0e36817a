using System.ComponentModel;
using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Migration.Bench.Peers;

/// <summary>
/// <c>--qemu backports</c>: the QEMU of this Debian release's backports suite, downloaded with apt-get into the
/// bench's own directory and unpacked there (dpkg-deb -x), never installed, so the machine's QEMU stays as it is.
/// QEMU before 9.0 loses dirty pages under TCG (see <see cref="QemuPeer.TcgLosesWrites"/>), and Debian 12 ships 7.2;
/// its backports carry a QEMU with the fix. The mirror is the one the machine's own apt sources name.
/// </summary>
internal static partial class QemuBackports
{
    private static readonly string[] Packages =
        ["qemu-system-x86", "qemu-system-common", "qemu-system-data", "seabios"];

    private static readonly string[] SourceFiles = ["/etc/apt/sources.list"];

    /// <summary>The unpacked qemu-system-x86_64 (its firmware beside it), or null and why not.</summary>
    public static async Task<(string? Qemu, string? Reason)> FetchAsync(string workDir, TextWriter output,
        CancellationToken ct)
    {
        string root = Path.Combine(workDir, "qemu-backports");
        string qemu = Path.Combine(root, "usr", "bin", "qemu-system-x86_64");
        if (File.Exists(qemu))
        {
            return (qemu, null);
        }

        string? codename = OsRelease("VERSION_CODENAME");
        string? mirror = Mirror(codename);
        if (!File.Exists("/usr/bin/apt-get") || codename is null || mirror is null)
        {
            return (null, "--qemu backports needs apt-get and a Debian release whose apt sources name its mirror");
        }

        string apt = Path.Combine(workDir, "apt");
        foreach (string dir in new[] { "lists/partial", "cache/archives/partial", "sources", "debs" })
        {
            Directory.CreateDirectory(Path.Combine(apt, dir));
        }

        await File.WriteAllTextAsync(Path.Combine(apt, "sources", "backports.sources"),
            $"Types: deb\nURIs: {mirror}\nSuites: {codename}-backports\nComponents: main\n" +
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n", ct);
        string[] aptPrivate =
        [
            "-o", "Dir::Etc::sourcelist=-", "-o", $"Dir::Etc::sourceparts={Path.Combine(apt, "sources")}",
            "-o", $"Dir::State::Lists={Path.Combine(apt, "lists")}", "-o", $"Dir::Cache={Path.Combine(apt, "cache")}",
            "-o", "APT::Sandbox::User=root",
        ];
        output.WriteLine($"bench: downloading QEMU from {codename}-backports into {root} (not installed)");
        string debs = Path.Combine(apt, "debs");
        if (!await RunAsync("apt-get", [.. aptPrivate, "-qq", "update"], null, output, ct)
            || !await RunAsync("apt-get", [.. aptPrivate, "-qq", "download", .. Packages], debs, output, ct))
        {
            return (null, $"apt-get could not download {string.Join(' ', Packages)} from {codename}-backports");
        }

        foreach (string deb in Directory.EnumerateFiles(debs, "*.deb"))
        {
            if (!await RunAsync("dpkg-deb", ["-x", deb, root], null, output, ct))
            {
                return (null, $"dpkg-deb could not unpack {Path.GetFileName(deb)}");
            }
        }

        return File.Exists(qemu) ? (qemu, null) : (null, $"{codename}-backports' packages hold no {qemu}");
    }

    private static string? OsRelease(string key) =>
        File.Exists("/etc/os-release")
            ? File.ReadLines("/etc/os-release").Where(l => l.StartsWith(key + "=", StringComparison.Ordinal))
                .Select(l => l[(key.Length + 1)..].Trim('"')).FirstOrDefault()
            : null;

    /// <summary>The mirror the machine's apt sources use for <paramref name="codename"/> itself.</summary>
    private static string? Mirror(string? codename)
    {
        if (codename is null)
        {
            return null;
        }

        var files = SourceFiles
            .Concat(Directory.Exists("/etc/apt/sources.list.d")
                ? Directory.EnumerateFiles("/etc/apt/sources.list.d", "*.sources")
                    .Concat(Directory.EnumerateFiles("/etc/apt/sources.list.d", "*.list"))
                : [])
            .Where(File.Exists);
        foreach (string file in files)
        {
            string text = File.ReadAllText(file);
            // deb822: a stanza with URIs: and a Suites: line naming the release; one-line: "deb URI codename main".
            foreach (string stanza in text.Split("\n\n"))
            {
                var uri = Deb822Uri().Match(stanza);
                if (uri.Success && Regex.IsMatch(stanza, $@"(?m)^Suites:.*\b{codename}(\s|$)"))
                {
                    return uri.Groups[1].Value;
                }
            }

            var line = Regex.Match(text, $@"(?m)^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{codename}\s");
            if (line.Success)
            {
                return line.Groups[1].Value;
            }
        }

        return null;
    }

    private static async Task<bool> RunAsync(string program, string[] args, string? dir, TextWriter output,
        CancellationToken ct)
    {
        var psi = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = dir ?? Environment.CurrentDirectory,
        };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        try
        {
            using var p = Process.Start(psi)!;
            _ = p.StandardOutput.ReadToEndAsync(ct);
            string err = await p.StandardError.ReadToEndAsync(ct);
            await p.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromMinutes(10), ct);
            if (p.ExitCode != 0)
            {
                output.WriteLine($"bench: {program} {string.Join(' ', args.TakeLast(3))} failed: {err.Trim()}");
            }

            return p.ExitCode == 0;
        }
        catch (Exception ex) when (ex is Win32Exception or TimeoutException)
        {
            output.WriteLine($"bench: could not run {program}: {ex.Message}");
            return false;
        }
    }

    [GeneratedRegex(@"(?m)^URIs:\s*(\S+)")]
    private static partial Regex Deb822Uri();
}
