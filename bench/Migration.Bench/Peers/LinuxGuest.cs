using System.Diagnostics;
using System.Globalization;

namespace Migration.Bench.Peers;

/// <summary>
/// The real Linux guest QEMU's own free page hinting runs on: Debian's kernel and a busybox initramfs (built by the
/// embedded <c>build-initramfs.sh</c>) whose init fills most of RAM with non-zero data in tmpfs and deletes it, so
/// the guest holds stale free pages as our memhog guest does; then it idles with a heartbeat on its serial port.
/// </summary>
internal sealed record LinuxGuest(string Kernel, string Initrd)
{
    /// <summary>What the guest's serial port shows once it has filled and freed its memory.</summary>
    public const string Ready = "guest: ready";

    /// <summary>The heartbeat: on a destination it shows the guest runs there.</summary>
    public const string Alive = "guest: alive";

    /// <summary>Lines a Linux kernel prints when it has gone wrong (a lost write shows as one of these).</summary>
    private static readonly string[] CrashMarks =
        ["Oops", "BUG", "Kernel panic", "general protection", "corruption", "segfault"];

    private static readonly Dictionary<string, string> Packages = new()
    {
        ["/bin/busybox"] = "busybox-static",
        ["/boot/vmlinuz-*-amd64"] = "linux-image-amd64",
        ["cpio"] = "cpio",
        ["modinfo"] = "kmod",
    };

    /// <summary>
    /// Installs what the image needs when allowed and builds the initramfs in <paramref name="workDir"/>; the guest,
    /// or null and why it cannot be built.
    /// </summary>
    /// <param name="dirtyProgram">The busy guest's static program (<see cref="DirtyProgram"/>), put in as /bin/dirty:
    /// the guest then runs it when booted with <see cref="DirtyQemuArgs"/>.</param>
    public static async Task<(LinuxGuest? Guest, string? Reason)> PrepareAsync(string workDir, TextWriter output,
        CancellationToken ct, string? dirtyProgram = null)
    {
        if (!await DebianPackage.EnsureFilesAsync(Packages, output, ct))
        {
            return (null, "the Linux guest needs " + string.Join(", ", Packages.Values.Distinct()) +
                " (apt-get install them as root)");
        }

        string script = Path.Combine(workDir, "build-initramfs.sh");
        await using (var resource = typeof(LinuxGuest).Assembly.GetManifestResourceStream("build-initramfs.sh")
            ?? throw new InvalidOperationException("build-initramfs.sh is not embedded in the bench"))
        await using (var file = File.Create(script))
        {
            await resource.CopyToAsync(file, ct);
        }

        string initrd = Path.Combine(workDir,
            dirtyProgram is null ? "linux-guest.cpio.gz" : "linux-guest-dirty.cpio.gz");
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(script);
        psi.ArgumentList.Add(initrd);
        if (dirtyProgram is not null)
        {
            psi.ArgumentList.Add(dirtyProgram);
        }

        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync(ct);
        string stderr = await p.StandardError.ReadToEndAsync(ct);
        await p.WaitForExitAsync(ct);
        string kernel = (await stdout).Trim().Split('\n')[^1];
        return p.ExitCode == 0 && File.Exists(kernel)
            ? (new LinuxGuest(kernel, initrd), null)
            : (null, $"building the Linux guest's initramfs failed: {stderr.Trim()}");
    }

    /// <summary>
    /// QEMU arguments for this guest beside its RAM: one vCPU, the balloon with free page hinting on or off (QEMU
    /// runs hinting in an iothread), the serial port into <paramref name="serialLog"/>; the init fills and frees
    /// <paramref name="fillMiB"/>. <c>init_on_alloc=0</c>: Debian's kernel zeroes every allocation by default, which
    /// dirties the pages the balloon driver allocates to hint; that case belongs to the comparison of mechanisms.
    /// </summary>
    public string[] QemuArgs(bool hints, long fillMiB, string serialLog) =>
    [
        "-smp", "1", "-kernel", Kernel, "-initrd", Initrd,
        "-append", $"console=ttyS0 quiet panic=-1 init_on_alloc=0 fill_mb={fillMiB}",
        "-object", "iothread,id=io0",
        "-device", $"virtio-balloon-pci,id=balloon0,free-page-hint={(hints ? "on" : "off")},iothread=io0",
        "-serial", $"file:{serialLog}",
    ];

    /// <summary>
    /// QEMU arguments for the convergence benchmark's busy guest (an initramfs built with the dirtying program): one
    /// vCPU, no devices, the serial port into <paramref name="serialLog"/>; init starts the program on
    /// <paramref name="work"/>'s working set and rate, and it prints its rate there once a second. The TSC is the
    /// clock (no watchdog on a loaded host), so the program reads the time without leaving the guest.
    /// </summary>
    public string[] DirtyQemuArgs(DirtyWork work, string serialLog) =>
    [
        "-smp", "1", "-kernel", Kernel, "-initrd", Initrd,
        "-append", $"console=ttyS0 quiet panic=-1 init_on_alloc=0 clocksource=tsc tsc=reliable {work.KernelArgs}",
        "-serial", $"file:{serialLog}",
    ];

    /// <summary>Waits until <paramref name="serialLog"/> shows <paramref name="text"/>; false when it never does.</summary>
    public static async Task<bool> WaitForAsync(string serialLog, string text, TimeSpan limit, CancellationToken ct)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < limit)
        {
            if (File.Exists(serialLog) && Read(serialLog).Contains(text, StringComparison.Ordinal))
            {
                return true;
            }

            await Task.Delay(500, ct);
        }

        return false;
    }

    /// <summary>The first line of <paramref name="serialLog"/> that shows a kernel in trouble, or null.</summary>
    public static string? FirstCrash(string serialLog) =>
        File.Exists(serialLog)
            ? Read(serialLog).Split('\n')
                .FirstOrDefault(l => CrashMarks.Any(m => l.Contains(m, StringComparison.Ordinal)))?.Trim()
            : null;

    /// <summary>The serial log, read while QEMU may still write it.</summary>
    private static string Read(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>Memory the machine can still give, from /proc/meminfo.</summary>
    public static long AvailableBytes()
    {
        string? line = File.ReadLines("/proc/meminfo")
            .FirstOrDefault(l => l.StartsWith("MemAvailable:", StringComparison.Ordinal));
        return line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1],
            CultureInfo.InvariantCulture) * 1024;
    }
}
