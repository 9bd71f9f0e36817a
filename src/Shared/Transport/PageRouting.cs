using System.Buffers;

namespace Migration.Shared.Transport;

/// <summary>
/// With delta pages, which channel carries which page: guest RAM is cut into stripes of <see cref="StripePages"/>
/// pages dealt to the channels in turn, and every list the engine queues on any channel is split so that each page
/// goes on the channel that owns it. A page then travels on one stream for the whole migration, so a delta always
/// finds its base on the channel that carried it (<see cref="DeltaEncoder"/>), and the engine's round-robin of batches
/// does not halve the cache's hits.
/// </summary>
/// <remarks>
/// The split keeps the engine's order on each channel and happens as the engine queues, so everything queued before a
/// round's barriers is on its channel's queue before the barriers are; the engine waits on every channel's barrier, as
/// it does without deltas. Stripes of 256 KiB spread any range of a few MiB (a hot set, a batch of round 0) evenly.
/// </remarks>
internal sealed class PageRouting
{
    /// <summary>Pages per stripe.</summary>
    public const int StripePages = 64;

    private readonly List<PageChannel> _channels = [];

    public int Count => _channels.Count;

    public void Add(PageChannel channel) => _channels.Add(channel);

    /// <summary>The channel that carries <paramref name="pfn"/>, of <paramref name="channels"/>.</summary>
    public static int OwnerOf(long pfn, int channels) => (int)((ulong)(pfn / StripePages) % (ulong)channels);

    /// <summary>Splits <paramref name="item"/> by owner and queues each part on its channel, in order.</summary>
    public async ValueTask ScatterAsync(PageWorkItem item, CancellationToken ct)
    {
        int channels = _channels.Count;
        var parts = new long[channels][];
        var counts = new int[channels];
        for (int i = 0; i < item.Count; i++)
        {
            long pfn = item.Pfns[i];
            int owner = OwnerOf(pfn, channels);
            parts[owner] ??= ArrayPool<long>.Shared.Rent(item.Count);
            parts[owner][counts[owner]++] = pfn;
        }

        ArrayPool<long>.Shared.Return(item.Pfns);
        for (int c = 0; c < channels; c++)
        {
            if (counts[c] > 0)
            {
                await _channels[c].EnqueueOwnAsync(new PageWorkItem(parts[c], counts[c], item.Round), ct)
                    .ConfigureAwait(false);
            }
        }
    }
}
