using Migration.Shared.Concurrency;

namespace Migration.TestSupport;

/// <summary>Starts no device thread: the test drives the device's work itself (for example with ProcessOne).</summary>
public sealed class NoDeviceThreads : IDeviceThreads
{
    public static readonly NoDeviceThreads Instance = new();

    IDisposable IDeviceThreads.Start(string name, Action<CancellationToken> body) => Stopped.Instance;

    private sealed class Stopped : IDisposable
    {
        public static readonly Stopped Instance = new();

        public void Dispose()
        {
        }
    }
}
