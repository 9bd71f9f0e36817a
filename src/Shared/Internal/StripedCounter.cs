using System.Runtime.InteropServices;

namespace Migration.Shared.Internal;

/// <summary>
/// A counter that many threads bump without sharing a cache line: each thread lands on one of a few padded slots
/// and readers add them up. Used where a single <see cref="Interlocked"/> counter would bounce between vCPUs.
/// </summary>
internal sealed class StripedCounter
{
    // 16 longs = 128 bytes per slot: one slot never shares a cache line (or an adjacent-line prefetch pair) with
    // another.
    private const int Stride = 16;
    private readonly long[] _slots;
    private readonly int _mask;

    public StripedCounter(int stripes = 16)
    {
        if (stripes <= 0 || (stripes & (stripes - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(stripes), stripes, "Stripes must be a positive power of two.");
        }

        _slots = new long[stripes * Stride];
        _mask = stripes - 1;
    }

    public void Add(long value)
    {
        int slot = (Environment.CurrentManagedThreadId & _mask) * Stride;
        Interlocked.Add(ref _slots[slot], value);
    }

    public long Sum()
    {
        long sum = 0;
        ReadOnlySpan<long> slots = _slots;
        for (int i = 0; i < slots.Length; i += Stride)
        {
            sum += Volatile.Read(ref MemoryMarshal.GetReference(slots[i..]));
        }

        return sum;
    }
}
