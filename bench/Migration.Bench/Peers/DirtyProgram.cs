using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Migration.Bench.Peers;

/// <summary>
/// The busy guest's program (<c>dirty.c</c>, embedded): built static with the machine's C compiler at bench time and
/// put into the Linux guest's initramfs, where init starts it when the kernel command line has <c>dirty_mb=</c>.
/// </summary>
internal static partial class DirtyProgram
{
    /// <summary>What the program prints once its working set is filled, before its first rate line.</summary>
    public const string Ready = "dirty: ready";

    private static readonly Dictionary<string, string> Packages = new()
    {
        ["gcc"] = "gcc",
        ["/usr/lib/x86_64-linux-gnu/libc.a"] = "libc6-dev",
    };

    /// <summary>
    /// Compiles the program into <paramref name="workDir"/> (<c>gcc -static -O2</c>), installing gcc and libc6-dev
    /// first when missing and allowed; its path, or null and why not.
    /// </summary>
    public static async Task<(string? Path, string? Reason)> BuildAsync(string workDir, TextWriter output,
        CancellationToken ct)
    {
        if (!await DebianPackage.EnsureFilesAsync(Packages, output, ct))
        {
            return (null, "the busy guest's program needs gcc and libc6-dev (apt-get install them as root)");
        }

        string source = Path.Combine(workDir, "dirty.c"), binary = Path.Combine(workDir, "dirty");
        await using (var resource = typeof(DirtyProgram).Assembly.GetManifestResourceStream("dirty.c")
            ?? throw new InvalidOperationException("dirty.c is not embedded in the bench"))
        await using (var file = File.Create(source))
        {
            await resource.CopyToAsync(file, ct);
        }

        var psi = new ProcessStartInfo("gcc") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in (string[])["-static", "-O2", "-Wall", "-o", binary, source])
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        _ = p.StandardOutput.ReadToEndAsync(ct);
        string stderr = await p.StandardError.ReadToEndAsync(ct);
        await p.WaitForExitAsync(ct);
        return p.ExitCode == 0 && File.Exists(binary)
            ? (binary, null)
            : (null, $"gcc -static could not build the busy guest's program: {stderr.Trim()}");
    }

    /// <summary>What the program prints for a page it found stale (the first few).</summary>
    public const string Bad = "dirty: BAD";

    /// <summary>One rate line, <c>dirty: t=12.004 pages=1234567 pps=15259 MBps=62.5 bad=0</c>.</summary>
    public static DirtySample? Parse(string line, double hostSeconds)
    {
        var m = RateLine().Match(line);
        return m.Success
            ? new DirtySample(hostSeconds, Number(m.Groups[1].Value), Integer(m.Groups[2].Value),
                Number(m.Groups[3].Value), Number(m.Groups[4].Value), Integer(m.Groups[5].Value))
            : null;
    }

    /// <summary>
    /// Pages per second over the rate lines seen in [<paramref name="from"/>, <paramref name="to"/>] (host seconds):
    /// the pages the guest wrote from the line before the first of them to the last, over the guest's own time
    /// between the two (so a stopped guest's gap is not counted). Null when no line fell in the window.
    /// </summary>
    public static double? Rate(IReadOnlyList<DirtySample> samples, double from, double to)
    {
        int first = -1, last = -1;
        for (int i = 0; i < samples.Count; i++)
        {
            if (samples[i].HostSeconds >= from && samples[i].HostSeconds <= to)
            {
                first = first < 0 ? i : first;
                last = i;
            }
        }

        if (first < 0)
        {
            return null;
        }

        if (first == 0)
        {
            return first == last ? samples[0].Pps : RateBetween(samples[0], samples[last]);
        }

        return RateBetween(samples[first - 1], samples[last]);
    }

    private static double RateBetween(DirtySample a, DirtySample b) =>
        b.GuestSeconds > a.GuestSeconds && b.Pages >= a.Pages
            ? (b.Pages - a.Pages) / (b.GuestSeconds - a.GuestSeconds)
            : b.Pps;

    private static double Number(string text) => double.Parse(text, CultureInfo.InvariantCulture);

    private static long Integer(string text) => long.Parse(text, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"dirty: t=([0-9.]+) pages=([0-9]+) pps=([0-9.]+) MBps=[0-9.]+ run=([0-9.]+) bad=([0-9]+)")]
    private static partial Regex RateLine();
}

/// <summary>
/// One rate line of the busy guest: when the bench read it (host seconds, on the run's clock), the guest's monotonic
/// time, the pages written since the program started, the rate over the guest's last second, the share of that second
/// it had a CPU by its own clock (a throttled vCPU shows here), and the pages of its working set it has found stale so
/// far (not what it last wrote there: a write the migration lost).
/// </summary>
internal sealed record DirtySample(double HostSeconds, double GuestSeconds, long Pages, double Pps, double Run,
    long Bad)
{
    /// <summary>The rate in MB/s (1 MB = 1e6 bytes of 4 KiB pages).</summary>
    public double MBps => Pps * 4096 / 1e6;
}

/// <summary>
/// Follows a serial log QEMU writes: each <see cref="Poll"/> reads what was appended since the last and keeps the
/// busy guest's rate lines, stamped with the host time they were read at (so at most one poll late).
/// </summary>
internal sealed class DirtySerial(string path)
{
    private readonly StringBuilder _partial = new();
    private long _offset;

    public string Path { get; } = path;

    public List<DirtySample> Samples { get; } = [];

    /// <summary>Whether <see cref="DirtyProgram.Ready"/> has shown.</summary>
    public bool Ready { get; private set; }

    /// <summary>The first <see cref="DirtyProgram.Bad"/> line, or null.</summary>
    public string? FirstBad { get; private set; }

    /// <summary>Reads what is new; <paramref name="hostSeconds"/> stamps the rate lines found.</summary>
    public void Poll(double hostSeconds)
    {
        if (!File.Exists(Path))
        {
            return;
        }

        using var stream = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        if (stream.Length <= _offset)
        {
            return;
        }

        stream.Position = _offset;
        byte[] buffer = new byte[stream.Length - _offset];
        stream.ReadExactly(buffer);
        _offset += buffer.Length;
        _partial.Append(Encoding.UTF8.GetString(buffer));
        string text = _partial.ToString();
        int end = text.LastIndexOf('\n');
        if (end < 0)
        {
            return;
        }

        _partial.Clear().Append(text.AsSpan(end + 1));
        foreach (string line in text[..end].Split('\n'))
        {
            Ready |= line.Contains(DirtyProgram.Ready, StringComparison.Ordinal);
            if (FirstBad is null && line.Contains(DirtyProgram.Bad, StringComparison.Ordinal))
            {
                FirstBad = line.Trim();
            }

            if (DirtyProgram.Parse(line, hostSeconds) is { } sample)
            {
                Samples.Add(sample);
            }
        }
    }

    /// <summary>Polls every 250 ms until <paramref name="until"/> holds or <paramref name="limit"/> passes.</summary>
    public async Task<bool> WaitAsync(Stopwatch clock, Func<DirtySerial, bool> until, TimeSpan limit,
        CancellationToken ct)
    {
        var deadline = clock.Elapsed + limit;
        while (true)
        {
            Poll(clock.Elapsed.TotalSeconds);
            if (until(this))
            {
                return true;
            }

            if (clock.Elapsed > deadline)
            {
                return false;
            }

            await Task.Delay(250, ct);
        }
    }
}
