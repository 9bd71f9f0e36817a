using System.Diagnostics;
using System.Text.RegularExpressions;
using Migration.Protocol;
using Migration.Shared.Hosting;
using Migration.Shared.Transport;

namespace Migration.Source.Cli;

/// <summary>
/// A target server started as a child process on a free loopback port (port 0; the child prints the port it got).
/// Used by <c>demo</c>, <c>bench</c> and the end-to-end tests. Killed on dispose if still running.
/// </summary>
public sealed partial class TargetProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly List<string> _output = [];
    private readonly TaskCompletionSource<Uri> _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private TargetProcess(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) => OnLine(e.Data);
        _process.ErrorDataReceived += (_, e) => OnLine(e.Data);
    }

    public Uri Address => _listening.Task.IsCompletedSuccessfully
        ? _listening.Task.Result
        : throw new InvalidOperationException("Target not listening yet.");

    public int ProcessId => _process.Id;

    public bool HasExited => _process.HasExited;

    public IReadOnlyList<string> Output
    {
        get
        {
            lock (_output)
            {
                return [.. _output];
            }
        }
    }

    [GeneratedRegex(@"target listening on (https?://\S+)")]
    private static partial Regex ListeningLine();

    /// <summary>Locates the built target next to this build (same configuration), or at MIGRATION_TARGET_DLL.</summary>
    public static string LocateTargetDll() =>
        BuiltPrograms.Locate("Target", "Migration.Target.dll", "MIGRATION_TARGET_DLL");

    /// <summary>
    /// Starts the target with <paramref name="arguments"/> (unless they hold a --listen, one on loopback port 0 is added)
    /// and waits until it listens.
    /// </summary>
    public static async Task<TargetProcess> StartAsync(IEnumerable<string> arguments, TimeSpan timeout,
        CancellationToken ct = default)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(LocateTargetDll());
        foreach (string a in arguments)
        {
            psi.ArgumentList.Add(a);
        }

        if (!psi.ArgumentList.Contains("--listen"))
        {
            psi.ArgumentList.Add("--listen");
            psi.ArgumentList.Add("http://127.0.0.1:0");
        }

        var process = Process.Start(psi) ?? throw new InvalidOperationException("Could not start the target process.");
        var target = new TargetProcess(process);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _ = process.WaitForExitAsync(CancellationToken.None).ContinueWith(
            _ => target._listening.TrySetException(new InvalidOperationException(
                "The target exited before it listened:\n" + string.Join('\n', target.Output))),
            TaskScheduler.Default);
        try
        {
            await target._listening.Task.WaitAsync(timeout, ct).ConfigureAwait(false);
        }
        catch
        {
            await target.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return target;
    }

    /// <summary>The target's state as its Status call reports it (idle, receiving, verifying, resumed, failed).</summary>
    public async Task<string> StateAsync(CancellationToken ct = default)
    {
        using var channel = ControlChannel.Create(Address, TransportSecurity.None);
        var reply = await new Protocol.Migration.MigrationClient(channel).StatusAsync(new StatusRequest(),
            deadline: DateTime.UtcNow.AddSeconds(10), cancellationToken: ct).ConfigureAwait(false);
        return reply.State;
    }

    /// <summary>
    /// Polls <see cref="StateAsync"/> until it is one of <paramref name="states"/>; returns it, or throws
    /// TimeoutException naming the last state seen.
    /// </summary>
    public async Task<string> WaitForStateAsync(TimeSpan timeout, params string[] states)
    {
        var watch = Stopwatch.StartNew();
        string state;
        while (Array.IndexOf(states, state = await StateAsync().ConfigureAwait(false)) < 0)
        {
            if (watch.Elapsed > timeout)
            {
                throw new TimeoutException(
                    $"the target stayed {state}, not {string.Join(" or ", states)}, for {timeout.TotalSeconds:F0} s");
            }

            await Task.Delay(50).ConfigureAwait(false);
        }

        return state;
    }

    /// <summary>Waits for the process to exit; returns its exit code.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        await _process.WaitForExitAsync().WaitAsync(timeout).ConfigureAwait(false);
        return _process.ExitCode;
    }

    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            Kill();
            await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException)
        {
            // Already gone.
        }

        _process.Dispose();
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.Add(line);
        }

        var m = ListeningLine().Match(line);
        if (m.Success)
        {
            _listening.TrySetResult(new Uri(m.Groups[1].Value));
        }
    }
}
