using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;

namespace Migration.FaultMatrix.Tests;

/// <summary>What the proxy does to the bytes it forwards.</summary>
public enum ProxyFault
{
    /// <summary>Forwards everything.</summary>
    None,

    /// <summary>Resets every open connection (RST); new connections pass.</summary>
    Reset,

    /// <summary>Stops forwarding on every open connection, both ways; new connections pass.</summary>
    Stall,

    /// <summary>Forwards a few hundred more bytes towards the target, then closes every open connection.</summary>
    Truncate,

    /// <summary>Flips one byte a little further on in the stream towards the target.</summary>
    Corrupt,

    /// <summary>Drops everything towards the source for a while (open connections stay broken), then passes again.</summary>
    DropReplies,
}

/// <summary>
/// A TCP proxy in front of a target, for fault injection: each connection is two Read, forward, AdvanceTo loops on
/// System.IO.Pipelines readers, with the current fault applied to what crosses. Loopback only; disposed with the test.
/// </summary>
public sealed class FaultProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly IPEndPoint _upstream;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Link> _links = [];
    private readonly Task _accepting;
    private DateTime _dropUntil;

    public FaultProxy(Uri target)
    {
        ArgumentNullException.ThrowIfNull(target);
        _upstream = new IPEndPoint(IPAddress.Loopback, target.Port);
        _listener.Start();
        Address = new Uri($"{target.Scheme}://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");
        _accepting = AcceptAsync();
    }

    /// <summary>Where the source should connect.</summary>
    public Uri Address { get; }

    /// <summary>Applies <paramref name="fault"/> to the open connections (and, for drops, to the next while).</summary>
    public void Inject(ProxyFault fault)
    {
        Link[] open;
        lock (_links)
        {
            open = [.. _links];
            if (fault == ProxyFault.DropReplies)
            {
                _dropUntil = DateTime.UtcNow.AddSeconds(2);
            }
        }

        if (open.Length == 0 && fault != ProxyFault.DropReplies)
        {
            _pending = fault; // nothing is connected yet: the next connection gets it
            return;
        }

        foreach (var link in open)
        {
            link.Inject(fault);
        }
    }

    private ProxyFault _pending;

    private bool DroppingReplies
    {
        get
        {
            lock (_links)
            {
                return DateTime.UtcNow < _dropUntil;
            }
        }
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptSocketAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            var server = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await server.ConnectAsync(_upstream, _stop.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException)
            {
                client.Dispose();
                server.Dispose();
                continue;
            }

            client.NoDelay = true;
            var link = new Link(this, client, server);
            lock (_links)
            {
                _links.Add(link);
            }

            link.Start();
            if (Interlocked.Exchange(ref _pending, ProxyFault.None) is var pending and not ProxyFault.None)
            {
                link.Inject(pending);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _listener.Stop();
        Link[] open;
        lock (_links)
        {
            open = [.. _links];
        }

        foreach (var link in open)
        {
            link.Close(reset: true);
        }

        await _accepting.ConfigureAwait(false);
        _stop.Dispose();
    }

    /// <summary>One proxied connection: a pump each way.</summary>
    private sealed class Link(FaultProxy owner, Socket client, Socket server)
    {
        private volatile bool _stalled;
        private long _truncateAfter = -1;
        private long _corruptAt = -1;
        private long _upstreamBytes;
        private int _closed;

        public void Start()
        {
            _ = PumpAsync(client, server, towardsTarget: true);
            _ = PumpAsync(server, client, towardsTarget: false);
        }

        public void Inject(ProxyFault fault)
        {
            switch (fault)
            {
                case ProxyFault.Reset:
                    Close(reset: true);
                    break;
                case ProxyFault.Stall:
                    _stalled = true;
                    break;
                case ProxyFault.Truncate:
                    Interlocked.Exchange(ref _truncateAfter, Interlocked.Read(ref _upstreamBytes) + 300);
                    break;
                case ProxyFault.Corrupt:
                    Interlocked.Exchange(ref _corruptAt, Interlocked.Read(ref _upstreamBytes) + 2000);
                    break;
            }
        }

        public void Close(bool reset)
        {
            if (Interlocked.Exchange(ref _closed, 1) != 0)
            {
                return;
            }

            foreach (var socket in new[] { client, server })
            {
                try
                {
                    if (reset)
                    {
                        socket.LingerState = new LingerOption(true, 0); // close with RST
                    }

                    socket.Dispose();
                }
                catch (ObjectDisposedException)
                {
                }
            }
        }

        private async Task PumpAsync(Socket from, Socket to, bool towardsTarget)
        {
            var reader = PipeReader.Create(new NetworkStream(from, ownsSocket: false));
            var writer = PipeWriter.Create(new NetworkStream(to, ownsSocket: false));
            try
            {
                while (true)
                {
                    while (_stalled)
                    {
                        if (Volatile.Read(ref _closed) != 0)
                        {
                            return;
                        }

                        await Task.Delay(50).ConfigureAwait(false); // holds the bytes: the peer's window fills up
                    }

                    var result = await reader.ReadAsync().ConfigureAwait(false);
                    var buffer = result.Buffer;
                    if (!buffer.IsEmpty && !_stalled)
                    {
                        if (towardsTarget)
                        {
                            if (!await ForwardTowardsTargetAsync(buffer, writer).ConfigureAwait(false))
                            {
                                Close(reset: false);
                                return;
                            }
                        }
                        else if (!owner.DroppingReplies)
                        {
                            foreach (var segment in buffer)
                            {
                                await writer.WriteAsync(segment).ConfigureAwait(false);
                            }
                        }
                    }

                    reader.AdvanceTo(_stalled ? buffer.Start : buffer.End, buffer.End);
                    if (result.IsCompleted)
                    {
                        Close(reset: false);
                        return;
                    }
                }
            }
            catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException
                or InvalidOperationException)
            {
                Close(reset: true);
            }
        }

        /// <summary>Forwards, corrupting or cutting as injected; false once the connection is to be closed.</summary>
        private async Task<bool> ForwardTowardsTargetAsync(ReadOnlySequence<byte> buffer, PipeWriter writer)
        {
            byte[] bytes = buffer.ToArray();
            long start = Interlocked.Add(ref _upstreamBytes, bytes.Length) - bytes.Length;
            long corruptAt = Interlocked.Read(ref _corruptAt);
            if (corruptAt >= start && corruptAt < start + bytes.Length)
            {
                bytes[corruptAt - start] ^= 0x5A;
                Interlocked.Exchange(ref _corruptAt, -1);
            }

            long cut = Interlocked.Read(ref _truncateAfter);
            int count = cut >= 0 ? (int)Math.Clamp(cut - start, 0, bytes.Length) : bytes.Length;
            await writer.WriteAsync(bytes.AsMemory(0, count)).ConfigureAwait(false);
            return count == bytes.Length;
        }
    }
}
