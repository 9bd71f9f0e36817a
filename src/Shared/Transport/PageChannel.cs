using System.Buffers;
using System.Runtime.ExceptionServices;
using System.Threading.Channels;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Shared.Protocol;

namespace Migration.Shared.Transport;

/// <summary>
/// One migration channel: its own HTTP/2 connection, one long-lived <c>SendPages</c> stream, and a worker that
/// encodes queued page lists straight from guest RAM into the outgoing message and writes them.
/// </summary>
/// <remarks>
/// Pages are read when the worker encodes them, which is after the engine cleared their migration-bitmap bit (and, in
/// manual mode, their dirty-log chunk): a guest write after the read is logged and sent again in a later round.
/// A barrier item lets the engine wait until everything queued before it is on the wire. A failure of the stream
/// leaves every method as a <see cref="MigrationFailedException"/> (<see cref="TransportFailures"/>).
/// </remarks>
internal sealed class PageChannel : IPageSink
{
    private readonly GrpcChannel _grpc;
    private static readonly Method<OutgoingBatch, PageStreamSummary> SendPagesMethod = new(
        MethodType.ClientStreaming,
        PageBatchWire.ServiceName,
        PageBatchWire.SendPagesMethod,
        Marshallers.Create<OutgoingBatch>(
            (batch, context) => batch.WriteTo(context),
            _ => throw new NotSupportedException("the source only sends page batches")),
        Marshallers.Create(summary => summary.ToByteArray(), PageStreamSummary.Parser.ParseFrom));

    private readonly AsyncClientStreamingCall<OutgoingBatch, PageStreamSummary> _call;
    private readonly Channel<WorkItem> _queue =
        Channel.CreateBounded<WorkItem>(new BoundedChannelOptions(4) { SingleReader = true });
    private readonly bool _compress;
    private readonly BandwidthLimiter _limiter;
    private readonly TransferCounters _counters;
    private readonly OutgoingBatch _batch;
    private readonly PageRouting? _routing;
    private readonly Task _worker;

    // Cancelled at teardown: a batch waiting for the bandwidth cap is abandoned (CompleteAsync has drained the queue
    // on the way to success; at teardown after a failure nothing queued is awaited). Without it a failed migration on a
    // slow cap waited for the cap to pass a whole batch: 5 s at 200 kB/s before the guest was said to run on here.
    private readonly CancellationTokenSource _teardown = new();

    private readonly Metadata _headers;

    private PageChannel(GrpcChannel grpc, AsyncClientStreamingCall<OutgoingBatch, PageStreamSummary> call,
        Metadata headers, GuestRam ram, bool compress, int pagesPerBatch, BandwidthLimiter limiter,
        TransferCounters counters, DeltaEncoder? delta, PageRouting? routing)
    {
        _grpc = grpc;
        _call = call;
        _headers = headers;
        _compress = compress;
        _limiter = limiter;
        _counters = counters;
        _batch = new OutgoingBatch(ram, pagesPerBatch, delta);
        _routing = routing;
        _worker = Task.Run(RunAsync);
    }

    /// <summary>A list of pages to send in a round, or (with <see cref="Barrier"/>) a marker to acknowledge.</summary>
    private readonly record struct WorkItem(long[]? Pfns, int Count, uint Round, TaskCompletionSource? Barrier);

    public static GrpcChannel CreateGrpcChannel(Uri target, TransportSecurity security) =>
        GrpcChannel.ForAddress(target, new GrpcChannelOptions
        {
            // One handler per channel = one TCP connection per channel; HTTP/2 windows sized for bulk transfer.
            HttpHandler = new SocketsHttpHandler
            {
                EnableMultipleHttp2Connections = false,
                InitialHttp2StreamWindowSize = 16 << 20,
                ConnectTimeout = TimeSpan.FromSeconds(10),
                KeepAlivePingDelay = TimeSpan.FromSeconds(10),
                KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
                SslOptions = security.ClientTls(),
            },
            MaxSendMessageSize = 64 << 20,
            MaxReceiveMessageSize = 64 << 20,
            // The handler is ours: disposing the channel closes its connection (left to the pool, an idle connection
            // lives on for a minute, kept up by the pings, and a long-lived target collects them).
            DisposeHttpClient = true,
        });

    /// <param name="delta">This channel's delta encoder when the target takes delta pages; else null.</param>
    /// <param name="routing">With deltas, the channels by the pages they own (this one joins it); else null.</param>
    public static PageChannel Open(GuestRam ram, TransportOptions options, string migrationId, Metadata headers,
        BandwidthLimiter limiter, TransferCounters counters, CancellationToken ct, DeltaEncoder? delta = null,
        PageRouting? routing = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(headers);
        var grpc = CreateGrpcChannel(options.Target, options.Security);
        headers.Add(WireNames.MigrationIdHeader, migrationId);
        var call = grpc.CreateCallInvoker().AsyncClientStreamingCall(SendPagesMethod, null,
            new CallOptions(headers, cancellationToken: ct));
        var channel = new PageChannel(grpc, call, headers, ram, options.Compression == Compression.Lz4,
            options.PagesPerBatch, limiter, counters, delta, routing);
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

    /// <summary>Ends the stream and returns the target's summary of it.</summary>
    public async Task CompleteAsync(CancellationToken ct)
    {
        _queue.Writer.TryComplete();
        await _worker.WaitAsync(ct).ConfigureAwait(false);
        await TransportFailures.Call(async () =>
        {
            await _call.RequestStream.CompleteAsync().WaitAsync(ct).ConfigureAwait(false);
            await _call.ResponseAsync.WaitAsync(ct).ConfigureAwait(false);
        }).ConfigureAwait(false);
    }

    public async Task<TimeSpan> RehearseCloseAsync(CancellationToken ct)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        using var call = _grpc.CreateCallInvoker().AsyncClientStreamingCall(SendPagesMethod, null,
            new CallOptions(_headers, cancellationToken: ct));
        await TransportFailures.Call(async () =>
        {
            await call.RequestStream.CompleteAsync().WaitAsync(ct).ConfigureAwait(false);
            await call.ResponseAsync.WaitAsync(ct).ConfigureAwait(false);
        }).ConfigureAwait(false);
        return System.Diagnostics.Stopwatch.GetElapsedTime(start);
    }

    private async Task RunAsync()
    {
        try
        {
            await foreach (var item in _queue.Reader.ReadAllAsync().ConfigureAwait(false))
            {
                if (item.Barrier is not null)
                {
                    item.Barrier.TrySetResult();
                    continue;
                }

                try
                {
                    var tally = _batch.Encode(item.Pfns.AsSpan(0, item.Count), item.Round, _compress);
                    long bytes = _batch.MessageLength + 5; // + gRPC message header
                    await _limiter.WaitAsync(bytes, _teardown.Token).ConfigureAwait(false);
                    // The batch's buffers are reused only after WriteAsync returns, by which time it has been
                    // serialised.
                    await TransportFailures.Call(() => _call.RequestStream.WriteAsync(_batch)).ConfigureAwait(false);
                    _counters.Add(bytes, tally);
                }
                finally
                {
                    ArrayPool<long>.Shared.Return(item.Pfns!);
                }
            }
        }
        catch (Exception ex)
        {
            // Fail every waiter: the engine sees the error at its next barrier or enqueue.
            _queue.Writer.TryComplete(ex);
            while (_queue.Reader.TryRead(out var pending))
            {
                pending.Barrier?.TrySetException(ex);
            }

            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _teardown.CancelAsync().ConfigureAwait(false);
        try
        {
            await _worker.WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is MigrationFailedException or TimeoutException or OperationCanceledException
            or InvalidOperationException)
        {
            // Already reported through the engine.
        }

        _call.Dispose();
        _grpc.Dispose();
        _teardown.Dispose();
    }
}
