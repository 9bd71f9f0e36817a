namespace Migration.Shared.Balloon;

/// <summary>The balloon's virtqueues, by role.</summary>
public enum BalloonVq
{
    Inflate,
    Deflate,
    Stats,
    FreePage,
    Reporting,
    Events,
}

/// <summary>
/// Which index each queue has. The spec numbers them 0 inflateq, 1 deflateq, 2 statsq, 3 free_page_vq, 4 reporting_vq,
/// but a queue exists only when its feature was negotiated, and the indexes are dense: Linux finds only the queues of
/// negotiated features, so with hinting but no statistics the free page queue is index 2, not 3. A device that
/// hard-codes indexes disagrees with the guest as soon as a feature is declined (guests have wedged on exactly that).
/// Both our driver and our device derive the layout from the negotiated features with this one function.
/// </summary>
public static class BalloonQueues
{
    /// <summary>The queue's index under <paramref name="features"/>, or -1 when it does not exist.</summary>
    public static int IndexOf(BalloonVq queue, ulong features)
    {
        int index = 0;
        foreach (var q in Enum.GetValues<BalloonVq>())
        {
            if (!Exists(q, features))
            {
                continue;
            }

            if (q == queue)
            {
                return index;
            }

            index++;
        }

        return -1;
    }

    /// <summary>The queue at <paramref name="index"/> under <paramref name="features"/>, or null.</summary>
    public static BalloonVq? At(int index, ulong features)
    {
        int i = 0;
        foreach (var q in Enum.GetValues<BalloonVq>())
        {
            if (Exists(q, features) && i++ == index)
            {
                return q;
            }
        }

        return null;
    }

    private static bool Exists(BalloonVq queue, ulong features) => queue switch
    {
        BalloonVq.Inflate or BalloonVq.Deflate => true,
        BalloonVq.Stats => BalloonFeatureBits.Has(features, BalloonFeatureBits.StatsQueue),
        BalloonVq.FreePage => BalloonFeatureBits.Has(features, BalloonFeatureBits.FreePageHint),
        BalloonVq.Reporting => BalloonFeatureBits.Has(features, BalloonFeatureBits.PageReporting),
        BalloonVq.Events => BalloonFeatureBits.Has(features, BalloonFeatureBits.EventsQueue),
        _ => false,
    };
}
