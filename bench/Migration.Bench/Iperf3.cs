using System.Diagnostics;
using System.Text.Json;
using Migration.Bench.Peers;

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
        string? exe = await DebianPackage.EnsureAsync("iperf3", "iperf3", output, ct);
        if (exe is null)
        {
            return new Iperf3Result(null, "iperf3 is not installed and could not be installed (apt-get install iperf3)",
                null, seconds);
        }

        int port = Loopback.FreePort();
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
}
