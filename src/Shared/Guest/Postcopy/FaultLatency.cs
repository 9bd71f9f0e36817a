namespace Migration.Shared.Guest.Postcopy;

/// <summary>
/// How long faults waited, in 24 power-of-two buckets of microseconds as QEMU's postcopy latency histogram: bucket 0
/// holds waits under 2 us, bucket i (1..22) waits in [2^i, 2^(i+1)) us, bucket 23 everything from 2^23 us (8.4 s) up.
/// Thread-safe.
/// </summary>
public sealed class FaultLatency
{
    public const int Buckets = 24;

    private readonly long[] _counts = new long[Buckets];
    private long _totalTicks;
    private long _count;
    private long _maxTicks;

    public long Count => Volatile.Read(ref _count);

    /// <summary>The bucket a wait of <paramref name="microseconds"/> falls in.</summary>
    public static int BucketOf(double microseconds)
    {
        if (microseconds < 2)
        {
            return 0;
        }

        int bucket = (int)Math.Floor(Math.Log2(microseconds));
        return Math.Min(bucket, Buckets - 1);
    }

    public void Record(TimeSpan wait)
    {
        double us = wait.TotalMicroseconds;
        Interlocked.Increment(ref _counts[BucketOf(us)]);
        Interlocked.Add(ref _totalTicks, wait.Ticks);
        Interlocked.Increment(ref _count);
        long ticks = wait.Ticks;
        long max;
        while (ticks > (max = Volatile.Read(ref _maxTicks))
            && Interlocked.CompareExchange(ref _maxTicks, ticks, max) != max)
        {
        }
    }

    /// <summary>A copy of the counts, bucket by bucket.</summary>
    public long[] Counts()
    {
        var copy = new long[Buckets];
        for (int i = 0; i < Buckets; i++)
        {
            copy[i] = Volatile.Read(ref _counts[i]);
        }

        return copy;
    }

    public TimeSpan Total => TimeSpan.FromTicks(Volatile.Read(ref _totalTicks));

    public TimeSpan Max => TimeSpan.FromTicks(Volatile.Read(ref _maxTicks));

    /// <summary>
    /// The upper bound of the bucket holding the <paramref name="quantile"/> (0-1) wait: a wait at most this long, in
    /// microseconds; 0 with no faults.
    /// </summary>
    public long QuantileUpperBoundMicroseconds(double quantile)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(quantile, 0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(quantile, 1);
        long[] counts = Counts();
        long total = counts.Sum();
        if (total == 0)
        {
            return 0;
        }

        long rank = Math.Max(1, (long)Math.Ceiling(quantile * total));
        long seen = 0;
        for (int i = 0; i < Buckets; i++)
        {
            seen += counts[i];
            if (seen >= rank)
            {
                return i == Buckets - 1 ? (long)Max.TotalMicroseconds : 1L << (i + 1);
            }
        }

        return (long)Max.TotalMicroseconds;
    }
}
