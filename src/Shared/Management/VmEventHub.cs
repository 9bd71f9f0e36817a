using System.Threading.Channels;
using Migration.Shared.Balloon;
using Migration.Shared.Machine;

namespace Migration.Management;

/// <summary>
/// Fans a process's VM events out to every <c>WatchEvents</c> stream. Each watcher has a bounded queue that drops its
/// oldest event when the reader falls behind, so a slow client never holds up the device that raised the event.
/// Balloon progress (<c>balloon-change</c>, one per acknowledged request) is coalesced to one event per 250 ms with
/// the latest value, as QEMU throttles BALLOON_CHANGE; the final value always goes out. Each watcher watches one
/// guest: it gets that guest's events only, and its stream ends when the guest leaves (<see cref="End"/>).
/// </summary>
public sealed class VmEventHub : IDisposable
{
    /// <summary>Events a watcher may lag behind before the oldest are dropped.</summary>
    public const int WatcherCapacity = 1024;

    private static readonly TimeSpan ChangeInterval = TimeSpan.FromMilliseconds(250);

    private readonly object _gate = new();
    private readonly List<(string GuestId, Channel<VmEvent> Channel)> _watchers = [];
    private readonly TimeProvider _time;
    private readonly ITimer _flush;
    private VmEvent? _pendingChange;
    private long _lastChangeAt = long.MinValue;

    public VmEventHub(TimeProvider? time = null)
    {
        _time = time ?? TimeProvider.System;
        _flush = _time.CreateTimer(_ => FlushChange(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Publishes the balloon notifications of <paramref name="vm"/>, as <paramref name="guestId"/>.</summary>
    public void Attach(VirtualMachine vm, string guestId)
    {
        ArgumentNullException.ThrowIfNull(vm);
        vm.Balloon.Notified += n =>
        {
            var e = EventOf(n);
            e.GuestId = guestId;
            Publish(e);
        };
    }

    /// <summary>A watcher of guest <paramref name="guestId"/>'s events; dispose the lease to stop watching.</summary>
    public (ChannelReader<VmEvent> Reader, IDisposable Lease) Watch(string guestId)
    {
        var channel = Channel.CreateBounded<VmEvent>(new BoundedChannelOptions(WatcherCapacity)
        {
            FullMode = BoundedChannelFullMode.DropOldest,
            SingleReader = true,
        });
        lock (_gate)
        {
            _watchers.Add((guestId, channel));
        }

        return (channel.Reader, new Lease(this, channel));
    }

    public void Publish(VmEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        if (e.Kind == "balloon-change")
        {
            lock (_gate)
            {
                long now = _time.GetTimestamp();
                if (_lastChangeAt != long.MinValue && _time.GetElapsedTime(_lastChangeAt, now) < ChangeInterval)
                {
                    bool armed = _pendingChange is not null;
                    _pendingChange = e;
                    if (!armed)
                    {
                        _flush.Change(ChangeInterval - _time.GetElapsedTime(_lastChangeAt, now),
                            Timeout.InfiniteTimeSpan);
                    }

                    return;
                }

                _lastChangeAt = now;
                _pendingChange = null;
            }
        }

        Send(e);
    }

    /// <summary>
    /// Guest <paramref name="guestId"/> left: its watchers' streams end, after the events already queued, with
    /// <paramref name="ending"/> as their last status.
    /// </summary>
    public void End(string guestId, Exception ending)
    {
        lock (_gate)
        {
            foreach (var (guest, channel) in _watchers)
            {
                if (string.Equals(guest, guestId, StringComparison.Ordinal))
                {
                    channel.Writer.TryComplete(ending);
                }
            }
        }
    }

    /// <summary>A migration of guest <paramref name="guestId"/> changed status.</summary>
    public void PublishMigration(string guestId, string id, string status, string? error) => Publish(new VmEvent
    {
        Kind = "migration",
        GuestId = guestId,
        TimestampMs = _time.GetUtcNow().ToUnixTimeMilliseconds(),
        MigrationId = id,
        MigrationStatus = status,
        Message = error ?? string.Empty,
    });

    public void Dispose() => _flush.Dispose();

    private void FlushChange()
    {
        VmEvent? e;
        lock (_gate)
        {
            e = _pendingChange;
            _pendingChange = null;
            _lastChangeAt = _time.GetTimestamp();
        }

        if (e is not null)
        {
            Send(e);
        }
    }

    private void Send(VmEvent e)
    {
        lock (_gate)
        {
            foreach (var (guest, channel) in _watchers)
            {
                if (string.Equals(guest, e.GuestId, StringComparison.Ordinal))
                {
                    channel.Writer.TryWrite(e);
                }
            }
        }
    }

    private VmEvent EventOf(BalloonNotification n) => new()
    {
        Kind = n.Kind switch
        {
            BalloonNotificationKind.TargetChanged => "balloon-target",
            BalloonNotificationKind.ActualChanged => "balloon-change",
            BalloonNotificationKind.Pressure => "pressure",
            BalloonNotificationKind.PuffFailure => "puff-failure",
            _ => "device-error",
        },
        TimestampMs = _time.GetUtcNow().ToUnixTimeMilliseconds(),
        TargetPages = (ulong)n.TargetPages,
        ActualPages = (ulong)n.ActualPages,
        Level = n.Kind == BalloonNotificationKind.Pressure ? n.Level.ToString().ToLowerInvariant() : string.Empty,
        Message = n.Message ?? string.Empty,
    };

    private sealed class Lease(VmEventHub hub, Channel<VmEvent> channel) : IDisposable
    {
        public void Dispose()
        {
            lock (hub._gate)
            {
                hub._watchers.RemoveAll(w => ReferenceEquals(w.Channel, channel));
            }

            channel.Writer.TryComplete();
        }
    }
}
