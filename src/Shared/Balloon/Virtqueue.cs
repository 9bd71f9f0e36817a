namespace Migration.Shared.Balloon;

/// <summary>
/// One virtqueue as the device sees it: a fixed number of slots, the buffers the driver made available in the order
/// it added them, and which of them the device has used (processed or dropped: the driver may then reuse what a
/// buffer named). Each buffer is numbered as it is added; the number is the driver's handle to ask whether it is used.
/// </summary>
/// <remarks>
/// <para>A device's queues made with <see cref="Sibling"/> share one numbering: the balloon's driver names a buffer by
/// its number alone, whichever queue it went on, and the device serves the oldest buffer first across its queues.
/// Buffers are used in any order across queues, so the used set is a mark (everything up to it is used) plus the
/// numbers used ahead of it.</para>
/// <para>The device's lock guards the queue: call every member holding it, except <see cref="Count"/>, which may be
/// read without it, and <see cref="WaitUsed"/>, which takes it. Using a buffer pulses the lock, as the used-buffer
/// interrupt wakes the driver.</para>
/// </remarks>
/// <typeparam name="T">What a buffer holds.</typeparam>
internal sealed class Virtqueue<T>
{
    private readonly Queue<(long Seq, T Buffer)> _available = new();
    private readonly object _gate;
    private readonly Numbering _numbering;
    private int _count;

    /// <param name="capacity">Slots (at least one).</param>
    /// <param name="gate">The device's lock, which guards the queue.</param>
    public Virtqueue(int capacity, object gate)
        : this(capacity, gate, new Numbering())
    {
    }

    private Virtqueue(int capacity, object gate, Numbering numbering)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentNullException.ThrowIfNull(gate);
        Capacity = capacity;
        _gate = gate;
        _numbering = numbering;
    }

    public int Capacity { get; }

    /// <summary>Buffers waiting to be taken. Safe to read without the lock (a scheduler polls it).</summary>
    public int Count => Volatile.Read(ref _count);

    public int FreeSlots => Capacity - _available.Count;

    /// <summary>The number of the oldest buffer waiting, or -1 when none waits.</summary>
    public long OldestSeq => _available.TryPeek(out var oldest) ? oldest.Seq : -1;

    /// <summary>Another queue of the same device: as many slots, the same lock, one numbering with this queue.</summary>
    public Virtqueue<T> Sibling() => new(Capacity, _gate, _numbering);

    /// <summary>
    /// The driver adds a buffer. Returns its number, or -1 when every slot is in use (the buffer is not added).
    /// </summary>
    public long Add(T buffer)
    {
        if (_available.Count >= Capacity)
        {
            return -1;
        }

        long seq = _numbering.Next++;
        _available.Enqueue((seq, buffer));
        Volatile.Write(ref _count, _available.Count);
        return seq;
    }

    /// <summary>
    /// The device takes the oldest buffer, frees its slot and works on it; the buffer is used once
    /// <see cref="MarkUsed"/> says so. False when none waits.
    /// </summary>
    public bool TryTake(out long seq, out T buffer)
    {
        if (!_available.TryDequeue(out var item))
        {
            (seq, buffer) = (-1, default!);
            return false;
        }

        Volatile.Write(ref _count, _available.Count);
        (seq, buffer) = item;
        return true;
    }

    /// <summary>The device is done with a buffer it took (this queue's or a sibling's).</summary>
    public void MarkUsed(long seq)
    {
        _numbering.MarkUsed(seq);
        Monitor.PulseAll(_gate);
    }

    /// <summary>Takes every waiting buffer and uses it unread (the device drops them).</summary>
    public void DropAll()
    {
        while (_available.TryDequeue(out var item))
        {
            _numbering.MarkUsed(item.Seq);
        }

        Volatile.Write(ref _count, 0);
        Monitor.PulseAll(_gate);
    }

    /// <summary>Whether the buffer numbered <paramref name="seq"/> (on this queue or a sibling) is used.</summary>
    public bool IsUsed(long seq) => _numbering.IsUsed(seq);

    /// <summary>
    /// Takes the lock and waits up to <paramref name="timeout"/> for the buffer to be used (the used-buffer
    /// interrupt). False on timeout.
    /// </summary>
    public bool WaitUsed(long seq, TimeSpan timeout)
    {
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        lock (_gate)
        {
            while (!_numbering.IsUsed(seq))
            {
                long left = deadline - Environment.TickCount64;
                if (left <= 0)
                {
                    return false;
                }

                Monitor.Wait(_gate, (int)left);
            }

            return true;
        }
    }

    /// <summary>The numbers given out and used, shared by sibling queues.</summary>
    private sealed class Numbering
    {
        private readonly HashSet<long> _usedAhead = [];
        private long _usedUpTo = -1;

        /// <summary>The number the next buffer gets.</summary>
        public long Next { get; set; }

        public void MarkUsed(long seq)
        {
            if (seq != _usedUpTo + 1)
            {
                _usedAhead.Add(seq);
                return;
            }

            _usedUpTo = seq;
            while (_usedAhead.Remove(_usedUpTo + 1))
            {
                _usedUpTo++;
            }
        }

        public bool IsUsed(long seq) => seq <= _usedUpTo || _usedAhead.Contains(seq);
    }
}
