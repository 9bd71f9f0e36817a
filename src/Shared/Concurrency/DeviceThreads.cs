namespace Migration.Shared.Concurrency;

/// <summary>
/// Where a device runs its own host thread (QEMU's iothread for free page hinting). Production starts a dedicated
/// thread; the race fuzzer drives the device's work as an actor of its scheduler and starts nothing.
/// </summary>
internal interface IDeviceThreads
{
    /// <summary>Starts <paramref name="body"/>; disposing the result cancels its token and waits for it.</summary>
    IDisposable Start(string name, Action<CancellationToken> body);
}

/// <summary>One background thread per device thread.</summary>
internal sealed class DedicatedDeviceThreads : IDeviceThreads
{
    public static readonly DedicatedDeviceThreads Instance = new();

    public IDisposable Start(string name, Action<CancellationToken> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        var stop = new CancellationTokenSource();
        var thread = new Thread(() => body(stop.Token)) { IsBackground = true, Name = name };
        thread.Start();
        return new Running(thread, stop);
    }

    private sealed class Running(Thread thread, CancellationTokenSource stop) : IDisposable
    {
        public void Dispose()
        {
            stop.Cancel();
            thread.Join();
            stop.Dispose();
        }
    }
}
