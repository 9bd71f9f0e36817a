using System.Collections.Concurrent;
using Google.Protobuf;
using ServiceDescriptor = Google.Protobuf.Reflection.ServiceDescriptor;
using Grpc.Core;
using Migration.Protocol;
using Migration.Shared.Protocol;
using Migration.Shared.Transport;
using Migration.Target.Receiving;

namespace Migration.Target.Services;

/// <summary>
/// <c>PageStream.SendPages</c>, bound by hand so that each message is parsed by <see cref="PageBatchWire"/> straight
/// out of Kestrel's receive buffer (<see cref="DeserializationContext.PayloadAsReadOnlySequence"/>) into a reused
/// <see cref="ReceivedBatch"/>: no protobuf parse, no megabyte allocation per message, no garbage for the GC to chase
/// while the guest's RAM fills up.
/// </summary>
internal sealed class PageStreamService(IncomingMigrations migrations, ILogger<PageStreamService> log) : PageStreamServiceBase
{
    public override async Task<PageStreamSummary> SendPages(IAsyncStreamReader<ReceivedBatch> requestStream, ServerCallContext context)
    {
        ArgumentNullException.ThrowIfNull(requestStream);
        ArgumentNullException.ThrowIfNull(context);
        string? id = context.RequestHeaders.GetValue(WireNames.MigrationIdHeader);
        var migration = migrations.RequireReceiving(id);
        var summary = new PageStreamSummary();
        migration.StreamOpened();
        try
        {
            while (await requestStream.MoveNext(context.CancellationToken).ConfigureAwait(false))
            {
                var batch = requestStream.Current;
                try
                {
                    var (pages, applied) = migration.Apply(batch);
                    summary.Batches++;
                    summary.Pages += (ulong)pages;
                    summary.PagesApplied += (ulong)applied;
                    summary.Bytes += (ulong)batch.PayloadLength;
                }
                finally
                {
                    Return(batch);
                }
            }
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.InvalidArgument)
        {
            migrations.Fail(migration, ex.Status.Detail);
            throw;
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException)
        {
            // The source went away mid-stream. The migration cannot complete without it; discard the partial guest.
            TargetLog.StreamBroke(log, migration.Id, ex.Message);
            migrations.Fail(migration, $"page stream broke: {ex.Message}");
            throw RpcErrors.Cancelled("page stream broke");
        }
        finally
        {
            migration.StreamClosed();
        }

        return summary;
    }
}

/// <summary>
/// The hand-written counterpart of a generated service base: ASP.NET Core's binder finds the handler as the override
/// of <see cref="SendPages"/>, so the binding has to name a virtual method on this type.
/// </summary>
[BindServiceMethod(typeof(PageStreamServiceBase), nameof(BindService))]
internal abstract class PageStreamServiceBase
{
    private static readonly ConcurrentBag<ReceivedBatch> Pool = [];

    private static readonly Method<ReceivedBatch, PageStreamSummary> SendPagesMethod = new(
        MethodType.ClientStreaming,
        PageBatchWire.ServiceName,
        PageBatchWire.SendPagesMethod,
        Marshallers.Create<ReceivedBatch>(
            (_, _) => throw new NotSupportedException("the target only receives page batches"),
            context =>
            {
                var batch = Pool.TryTake(out var reused) ? reused : new ReceivedBatch();
                batch.ParseError = PageBatchWire.Read(context.PayloadAsReadOnlySequence(), batch);
                return batch;
            }),
        Marshallers.Create(summary => summary.ToByteArray(), PageStreamSummary.Parser.ParseFrom));

    /// <summary>For server reflection: the service as declared in <c>proto/migration.proto</c>.</summary>
    public static ServiceDescriptor Descriptor => MigrationReflection.Descriptor.FindTypeByName<ServiceDescriptor>("PageStream");

    /// <summary>Called by ASP.NET Core's gRPC binder (with a null instance while it discovers methods).</summary>
    public static void BindService(ServiceBinderBase binder, PageStreamServiceBase? service)
    {
        ArgumentNullException.ThrowIfNull(binder);
        binder.AddMethod(SendPagesMethod, service is null ? null : service.SendPages);
    }

    public abstract Task<PageStreamSummary> SendPages(IAsyncStreamReader<ReceivedBatch> requestStream, ServerCallContext context);

    /// <summary>Takes a batch back for the next message (its buffers are reused).</summary>
    protected static void Return(ReceivedBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        // A handful per channel is plenty; anything beyond that gives its payload buffer back.
        if (Pool.Count < 16)
        {
            Pool.Add(batch);
        }
        else
        {
            batch.Dispose();
        }
    }
}
