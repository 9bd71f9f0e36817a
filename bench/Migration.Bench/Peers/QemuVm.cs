using System.Diagnostics;

namespace Migration.Bench.Peers;

/// <summary>
/// One QEMU process (TCG, no devices, no display) with its QMP socket, ended by pid when disposed. Its CPU time is
/// read around a migration, so the benchmark can charge QEMU's migration the same way it charges ours.
/// </summary>
internal sealed class QemuVm : IAsyncDisposable
{
    private readonly Process _process;
    private readonly string _logPath;
    private readonly List<string> _output; // QEMU's stdout and stderr, filled by the process's reader threads

    private QemuVm(Process process, QmpClient qmp, string logPath, List<string> output)
    {
        _process = process;
        _output = output;
        Qmp = qmp;
        _logPath = logPath;
    }

    public QmpClient Qmp { get; }

    /// <summary>
    /// Starts QEMU with <paramref name="memoryBackend"/> as its RAM (<c>-object ...,id=m</c>) and connects to QMP.
    /// </summary>
    public static async Task<QemuVm> StartAsync(string qemu, string ramSize, string memoryBackend,
        IEnumerable<string> extra, string workDir, string logPath, CancellationToken ct)
    {
        string qmpPath = Path.Combine(workDir, $"qmp-{Guid.NewGuid():n}.sock");
        var psi = new ProcessStartInfo(qemu)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in (string[])["-nodefaults", "-display", "none", "-accel", "tcg",
            "-machine", "q35,memory-backend=m", "-m", ramSize, "-object", memoryBackend,
            "-qmp", $"unix:{qmpPath},server=on,wait=off"])
        {
            psi.ArgumentList.Add(a);
        }

        // A QEMU unpacked from a package elsewhere (--qemu backports) finds its firmware in its own tree.
        string data = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(qemu)!, "..", "share", "qemu"));
        if (Directory.Exists(data) && data != "/usr/share/qemu")
        {
            psi.ArgumentList.Add("-L");
            psi.ArgumentList.Add(data);
        }

        foreach (string a in extra)
        {
            psi.ArgumentList.Add(a);
        }

        var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {qemu}");
        var lines = new List<string>();
        process.OutputDataReceived += (_, e) => Add(lines, e.Data);
        process.ErrorDataReceived += (_, e) => Add(lines, e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            // A preallocating destination touches all of its RAM before QMP answers.
            var qmp = await QmpClient.ConnectAsync(qmpPath, TimeSpan.FromMinutes(5), ct);
            return new QemuVm(process, qmp, logPath, lines);
        }
        catch (Exception) when (process.HasExited)
        {
            throw new InvalidOperationException(
                $"QEMU exited with code {process.ExitCode}: {string.Join(" | ", lines.TakeLast(5))}");
        }
        catch
        {
            process.Kill(entireProcessTree: true);
            process.Dispose();
            throw;
        }
    }

    /// <summary>User plus system CPU seconds the process has used so far.</summary>
    public double CpuSeconds()
    {
        _process.Refresh();
        return _process.TotalProcessorTime.TotalSeconds;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await Qmp.ExecuteAsync("quit", null, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (Exception ex) when (ex is IOException or InvalidOperationException or TimeoutException)
        {
            // already gone or wedged: killed below
        }

        await Qmp.DisposeAsync();
        if (!_process.WaitForExit(TimeSpan.FromSeconds(20)))
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }

        string[] lines;
        lock (_output)
        {
            lines = [.. _output];
        }

        await File.WriteAllLinesAsync(_logPath, lines, CancellationToken.None);
        _process.Dispose();
    }

    private static void Add(List<string> lines, string? line)
    {
        if (line is not null)
        {
            lock (lines)
            {
                lines.Add(line);
            }
        }
    }
}
