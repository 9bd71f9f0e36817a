using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;

namespace Migration.Bench;

/// <summary>One iperf3 loopback measurement, or why there is none.</summary>
internal sealed record Iperf3Result(double? BitsPerSecond, string? Error, string? Version, int Seconds)
{
    public double? BytesPerSecond => BitsPerSecond / 8;
}

/// <summary>
/// iperf3 over loopback, single TCP stream: the ceiling our page stream is compared with. Installs the Debian package
/// when it is missing and the benchmark may (root, or sudo without a password); otherwise reports why it could not.
/// </summary>
internal static class Iperf3
{
    public static async Task<Iperf3Result> RunAsync(int seconds, TextWriter output, CancellationToken ct)
    {
        string? exe = Find() ?? await TryInstallAsync(output, ct);
        if (exe is null)
        {
            return new Iperf3Result(null, "iperf3 is not installed and could not be installed (apt-get install iperf3)",
                null, seconds);
        }

        int port = FreePort();
        using var server = Start(exe, ["-s", "-1", "-p", port.ToString()]);
        try
        {
            await Task.Delay(300, ct); // the server binds at once; give it a moment before the client connects
            using var client = Start(exe, ["-c", "127.0.0.1", "-p", port.ToString(), "-t", seconds.ToString(), "-J"]);
            string json = await client.StandardOutput.ReadToEndAsync(ct);
            await client.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromSeconds(seconds + 30), ct);
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            if (root.TryGetProperty("error", out var error))
            {
                return new Iperf3Result(null, "iperf3: " + error.GetString(), null, seconds);
            }

            double bps = root.GetProperty("end").GetProperty("sum_received").GetProperty("bits_per_second").GetDouble();
            string? version = root.GetProperty("start").TryGetProperty("version", out var v) ? v.GetString() : null;
            output.WriteLine($"bench: iperf3 loopback {bps / 1e9:F1} Gbit/s ({bps / 8e9:F2} GB/s) over {seconds} s");
            return new Iperf3Result(bps, null, version, seconds);
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException
            or TimeoutException)
        {
            return new Iperf3Result(null, "iperf3 gave no result: " + ex.Message, null, seconds);
        }
        finally
        {
            if (!server.HasExited)
            {
                server.Kill();
            }
        }
    }

    private static string? Find() =>
        (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(Path.PathSeparator)
            .Select(dir => Path.Combine(dir, "iperf3"))
            .FirstOrDefault(File.Exists);

    private static async Task<string?> TryInstallAsync(TextWriter output, CancellationToken ct)
    {
        if (!File.Exists("/usr/bin/apt-get"))
        {
            return null;
        }

        bool root = Environment.UserName == "root";
        output.WriteLine("bench: iperf3 is missing; installing the Debian package");
        foreach (string[] step in new[] { new[] { "apt-get", "update", "-qq" },
            new[] { "apt-get", "install", "-y", "-qq", "iperf3" } })
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
                psi.ArgumentList.Add("-n");
            }

            foreach (string a in root ? step[1..] : step)
            {
                psi.ArgumentList.Add(a);
            }

            try
            {
                using var p = Process.Start(psi)!;
                _ = p.StandardOutput.ReadToEndAsync(ct);
                string err = await p.StandardError.ReadToEndAsync(ct);
                await p.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromMinutes(5), ct);
                if (p.ExitCode != 0)
                {
                    output.WriteLine($"bench: {string.Join(' ', step)} failed: {err.Trim()}");
                    return null;
                }
            }
            catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or TimeoutException)
            {
                output.WriteLine($"bench: could not run {string.Join(' ', step)}: {ex.Message}");
                return null;
            }
        }

        return Find();
    }

    private static Process Start(string exe, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(exe)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        return Process.Start(psi) ?? throw new InvalidOperationException("could not start iperf3");
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
