using System.Collections.Concurrent;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Postcopy;

namespace Migration.TestSupport;

/// <summary>
/// A postcopy source in one thread, as the return path is: answers each page the target asks for with the page
/// filled with <c>content(pfn)</c>, after <c>delay</c>, allocating as a gRPC message would when
/// <c>allocating</c> is set.
/// </summary>
public sealed class FakePostcopySource(Func<long, byte> content, TimeSpan delay = default, bool allocating = false)
    : IDisposable
{
    private readonly BlockingCollection<long> _queue = [];
    private readonly ConcurrentQueue<long> _requested = new();
    private PostcopyRam? _postcopy;
    private Thread? _thread;

    /// <summary>Every page asked for, in order.</summary>
    public List<long> Requested => [.. _requested];

    /// <summary>The request callback to give <see cref="PostcopyRam"/>.</summary>
    public void Request(long pfn)
    {
        _requested.Enqueue(pfn);
        _queue.Add(pfn);
    }

    /// <summary>Starts answering into <paramref name="postcopy"/>.</summary>
    public void Attach(PostcopyRam postcopy)
    {
        _postcopy = postcopy;
        _thread = new Thread(Serve) { IsBackground = true, Name = "fake postcopy source" };
        _thread.Start();
    }

    public void Dispose()
    {
        _queue.CompleteAdding();
        _thread?.Join();
        _queue.Dispose();
    }

    private void Serve()
    {
        var page = new byte[PageGeometry.PageSize];
        foreach (long pfn in _queue.GetConsumingEnumerable())
        {
            if (delay > TimeSpan.Zero)
            {
                Thread.Sleep(delay);
            }

            if (allocating)
            {
                page = new byte[PageGeometry.PageSize];
                _ = pfn.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }

            page.AsSpan().Fill(content(pfn));
            _postcopy!.Place(pfn, page);
        }
    }
}
