using System.Buffers;
using System.Runtime.ExceptionServices;
using System.Threading.Channels;
using Grpc.Core;
using Migration.Shared.Guest;
using Migration.Shared.Protocol;
using Migration.Shared.Transport.Http2;

namespace Migration.Shared.Transport;

/// <summary>
/// One migration channel: its own HTTP/2 connection (<see cref="PageStreamConnection"/>), one long-lived
/// <c>SendPages</c> call, and a thread of its own that encodes queued page lists and writes each batch with one
/// gathered system call straight from guest RAM.
/// </summary>
/// <remarks>
/// <para>Pages are read when the thread encodes and writes them, which is after the engine cleared their
/// migration-bitmap bit (and, in manual mode, their dirty-log chunk): a guest write after the read is logged and sent
/// again in a later round. A barrier item lets the engine wait until everything queued before it is on the wire. A
/// failure of the stream leaves every method as a <see cref="MigrationFailedException"/>
/// (<see cref="TransportFailures"/>).</para>
/// <para>The thread blocks in its writes (and, when the target's flow-control windows are spent, on credit): a
/// thread of its own keeps that off the thread pool, and the channel's work from hopping between pool threads per
/// batch, which a profile of the grpc-dotnet client found spinning for an eighth of the source's CPU.</para>
/// </remarks>
internal sealed class PageChannel : IPageSink
{
    /// <summary>The gRPC method path of <c>migration.v1.PageStream/SendPages</c>.</summary>
    public const string Path = "/" + PageBatchWire.ServiceName + "/" + PageBatchWire.SendPagesMethod;

    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);

    private readonly Uri _target;
    private readonly TransportSecurity _security;
    private readonly KeyValuePair<string, string>[] _metadata;
    private readonly Channel<WorkItem> _queue =
        Channel.CreateBounded<WorkItem>(new BoundedChannelOptions(4) { SingleReader = true });
    private readonly bool _compress;
    private readonly BandwidthLimiter _limiter;
    private readonly TransferCounters _counters;
    private readonly OutgoingBatch _batch;
    private readonly PageRouting? _routing;
    private readonly IoVector[] _pieces;
    private readonly IoVector[] _scratch = new IoVector[SocketGather.MaxVectors];
    private readonly byte[] _frameHeaders = new byte[FrameHeader.Size * 256];
    private readonly TaskCompletionSource _worker = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<PageStreamConnection> _connected =
        new(TaskCreationOptions.RunContinuationsAsynchronously);

    // Cancelled by the stream token (the engine failed or cancelled) or at teardown: the connection is aborted, which
    // wakes the thread wherever it waits (connecting, the bandwidth cap, credit, a full socket). At teardown after a
    // failure nothing queued is awaited; on the way to success CompleteAsync has drained the queue first.
    private readonly CancellationTokenSource _abort;
    private volatile PageStreamConnection? _connection;
    private PageStreamCall? _call;

    private PageChannel(TransportOptions options, KeyValuePair<string, string>[] metadata, GuestRam ram,
        BandwidthLimiter limiter, TransferCounters counters, DeltaEncoder? delta, PageRouting? routing,
        CancellationToken streamToken)
    {
        _target = options.Target;
        _security = options.Security;
        _metadata = metadata;
        _compress = options.Compression == Compression.Lz4;
        _limiter = limiter;
        _counters = counters;
        _batch = new OutgoingBatch(ram, options.PagesPerBatch, delta);
        _pieces = new IoVector[OutgoingBatch.MaxPieces(options.PagesPerBatch)];
        _routing = routing;
        _abort = CancellationTokenSource.CreateLinkedTokenSource(streamToken);
        _abort.Token.UnsafeRegister(static state => ((PageChannel)state!).AbortConnection(), this);
        new Thread(Run) { IsBackground = true, Name = "page-channel" }.Start();
    }

    /// <summary>A list of pages to send in a round, or (with <see cref="Barrier"/>) a marker to acknowledge.</summary>
    private readonly record struct WorkItem(long[]? Pfns, int Count, uint Round, TaskCompletionSource? Barrier);

    /// <param name="delta">This channel's delta encoder when the target takes delta pages; else null.</param>
    /// <param name="routing">With deltas, the channels by the pages they own (this one joins it); else null.</param>
    public static PageChannel Open(GuestRam ram, TransportOptions options, string migrationId, Metadata headers,
        BandwidthLimiter limiter, TransferCounters counters, CancellationToken ct, DeltaEncoder? delta = null,
        PageRouting? routing = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(headers);
        headers.Add(WireNames.MigrationIdHeader, migrationId);
        KeyValuePair<string, string>[] metadata = [.. headers.Select(h => KeyValuePair.Create(h.Key, h.Value))];
        var channel = new PageChannel(options, metadata, ram, limiter, counters, delta, routing, ct);
        routing?.Add(channel);
        return channel;
    }

    /// <remarks>
    /// With delta pages the list is split among the channels by the pages they own (<see cref="PageRouting"/>), so a
    /// page always travels on the same channel and its deltas find their base there.
    /// </remarks>
    public ValueTask EnqueueAsync(PageWorkItem item, CancellationToken ct) =>
        _routing is { Count: > 1 } routing ? routing.ScatterAsync(item, ct) : EnqueueOwnAsync(item, ct);

    /// <summary>Queues <paramref name="item"/> on this channel itself.</summary>
    internal async ValueTask EnqueueOwnAsync(PageWorkItem item, CancellationToken ct)
    {
        try
        {
            await _queue.Writer.WriteAsync(new WorkItem(item.Pfns, item.Count, item.Round, null), ct)
                .ConfigureAwait(false);
        }
        catch (ChannelClosedException closed) when (closed.InnerException is { } cause)
        {
            ExceptionDispatchInfo.Throw(cause); // the worker's own failure, as a barrier reports it
        }
    }

    /// <summary>
    /// Completes once everything queued so far has been written to the stream (or faults with the channel's error).
    /// </summary>
    public async Task BarrierAsync(CancellationToken ct)
    {
        var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            await _queue.Writer.WriteAsync(new WorkItem(null, 0, 0, tcs), ct).ConfigureAwait(false);
        }
        catch (ChannelClosedException closed) when (closed.InnerException is { } cause)
        {
            ExceptionDispatchInfo.Throw(cause);
        }

        await tcs.Task.WaitAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Ends the stream and returns once the target has acknowledged it with its summary.</summary>
    public async Task CompleteAsync(CancellationToken ct)
    {
        _queue.Writer.TryComplete();
        await _worker.Task.WaitAsync(ct).ConfigureAwait(false);
        var call = _call!;
        await TransportFailures.Call(async () =>
        {
            call.CompleteRequest();
            await call.Response.WaitAsync(ct).ConfigureAwait(false);
        }).ConfigureAwait(false);
    }

    public async Task<TimeSpan> RehearseCloseAsync(CancellationToken ct)
    {
        var connection = await TransportFailures.Call(() => _connected.Task.WaitAsync(ct)).ConfigureAwait(false);
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        await TransportFailures.Call(async () =>
        {
            var call = connection.StartCall(Path, _metadata);
            try
            {
                call.CompleteRequest();
                await call.Response.WaitAsync(ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                call.Cancel();
                throw;
            }
        }).ConfigureAwait(false);
        return System.Diagnostics.Stopwatch.GetElapsedTime(start);
    }

    private void Run()
    {
        try
        {
            var connection = PageStreamConnection.ConnectAsync(_target, _security, ConnectTimeout, _abort.Token)
                .GetAwaiter().GetResult();
            _connection = connection;
            if (_abort.IsCancellationRequested)
            {
                AbortConnection(); // the registration ran before the connection was there to abort
            }

            _call = connection.StartCall(Path, _metadata);
            _connected.TrySetResult(connection);
            var reader = _queue.Reader;
            while (WaitToRead(reader))
            {
                while (reader.TryRead(out var item))
                {
                    Send(item);
                }
            }

            _worker.TrySetResult();
        }
        catch (Exception ex)
        {
            var failure = TransportFailures.IsCallFailure(ex) ? TransportFailures.From(ex) : ex;
            // Fail every waiter: the engine sees the error at its next barrier or enqueue.
            _connected.TrySetException(failure);
            _queue.Writer.TryComplete(failure);
            while (_queue.Reader.TryRead(out var pending))
            {
                pending.Barrier?.TrySetException(failure);
                if (pending.Pfns is { } pfns)
                {
                    ArrayPool<long>.Shared.Return(pfns);
                }
            }

            _worker.TrySetException(failure);
        }
    }

    private static bool WaitToRead(ChannelReader<WorkItem> reader)
    {
        var more = reader.WaitToReadAsync();
        return more.IsCompletedSuccessfully ? more.Result : more.AsTask().GetAwaiter().GetResult();
    }

    private void Send(WorkItem item)
    {
        if (item.Barrier is not null)
        {
            item.Barrier.TrySetResult();
            return;
        }

        try
        {
            var tally = _batch.Encode(item.Pfns.AsSpan(0, item.Count), item.Round, _compress);
            int bytes = _batch.FramedLength;
            var granted = _limiter.WaitAsync(bytes, _abort.Token);
            if (!granted.IsCompletedSuccessfully)
            {
                granted.AsTask().GetAwaiter().GetResult();
            }

            int pieces = _batch.Gather(_pieces);
            _call!.WriteMessage(_pieces.AsSpan(0, pieces), bytes, _scratch, _frameHeaders);
            _counters.Add(bytes, tally);
        }
        finally
        {
            ArrayPool<long>.Shared.Return(item.Pfns!);
        }
    }

    private void AbortConnection() => _connection?.Abort(
        new RpcException(new Status(StatusCode.Cancelled, "the page stream was cancelled")));

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        _connection?.Dispose(); // a GOAWAY when the stream is done, else an abort that wakes the thread
        await _abort.CancelAsync().ConfigureAwait(false);
        try
        {
            await _worker.Task.WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is MigrationFailedException or TimeoutException or OperationCanceledException
            or InvalidOperationException)
        {
            // Already reported through the engine.
        }

        _connection?.Dispose();
        _abort.Dispose();
    }
}
