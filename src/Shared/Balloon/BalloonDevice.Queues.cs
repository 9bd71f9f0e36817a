namespace Migration.Shared.Balloon;

/// <summary>
/// The virtqueues as the driver sees them: it adds a buffer to a queue and kicks, then asks whether the device has
/// used it (the used-buffer interrupt). Which queues exist follows the negotiated features
/// (<see cref="BalloonQueues"/>); all of them are numbered as one.
/// </summary>
public sealed partial class BalloonDevice
{
    /// <summary>
    /// The driver adds a buffer to the queue at <paramref name="queueIndex"/> (the layout of
    /// <see cref="BalloonQueues"/>) and kicks. Returns its sequence number, or -1 for a queue that does not exist or
    /// is full: a device error (a driver that floods a queue or ignores the negotiated layout).
    /// </summary>
    public long Kick(int queueIndex, byte[] buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        long seq;
        using (_scheduling.Lock(_gate))
        {
            var queue = BalloonQueues.At(queueIndex, Features);
            if (queue is not { } q || q is BalloonVq.FreePage || (q is BalloonVq.Reporting && _reporting is null))
            {
                FailLocked($"a buffer on queue {queueIndex}, which is no inflate, deflate, stats, reporting or " +
                    $"events queue under features 0x{Features:x}");
                seq = -1;
            }
            else if ((seq = _queues[(int)q].Add(buffer)) < 0)
            {
                FailLocked($"{Name(q)} queue overflow: a buffer with all {QueueCapacity} slots in use");
            }
            else
            {
                Monitor.PulseAll(_gate);
            }
        }

        RaisePending();
        return seq;
    }

    /// <summary>Kicks the queue of role <paramref name="queue"/> under the negotiated layout.</summary>
    public long Kick(BalloonVq queue, byte[] buffer) => Kick(BalloonQueues.IndexOf(queue, Features), buffer);

    /// <summary>Slots not in use on the queue of role <paramref name="queue"/>.</summary>
    public int FreeSlots(BalloonVq queue)
    {
        using (_scheduling.Lock(_gate))
        {
            return _queues[(int)queue].FreeSlots;
        }
    }

    /// <summary>Whether the device has used (processed or dropped) the buffer with this sequence number.</summary>
    public bool IsUsed(long seq)
    {
        using (_scheduling.Lock(_gate))
        {
            // A stats buffer the device holds was taken off the queue but is not used until the next request.
            return _queues[0].IsUsed(seq) && (_statsHeld < 0 || seq != _statsHeld);
        }
    }

    /// <summary>
    /// Waits up to <paramref name="timeout"/> for the buffer to be used (the used-buffer interrupt); under the race
    /// fuzzer the scheduler runs others instead of the clock. The deadline is the real clock's, not the device's
    /// <see cref="TimeProvider"/>: it bounds a monitor wait, which a test's clock cannot advance.
    /// </summary>
    public bool WaitUsed(long seq, TimeSpan timeout) =>
        _scheduling.WaitPoint is not null ? IsUsed(seq) : _queues[0].WaitUsed(seq, timeout);
}
