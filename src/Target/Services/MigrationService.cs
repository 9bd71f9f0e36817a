using Grpc.Core;
using Migration.Protocol;
using Migration.Target.Receiving;

namespace Migration.Target.Services;

/// <summary>The gRPC face of <see cref="MigrationHost"/>: maps calls to it and protocol errors to statuses.</summary>
internal sealed class MigrationService(MigrationHost host, ILogger<MigrationService> log) : Protocol.Migration.MigrationBase
{
    public const string MigrationIdHeader = "migration-id";

    public override Task<BeginReply> Begin(BeginRequest request, ServerCallContext context) => Task.FromResult(host.Begin(request));

    public override async Task<PageStreamSummary> SendPages(IAsyncStreamReader<PageBatch> requestStream, ServerCallContext context)
    {
        string? id = context.RequestHeaders.GetValue(MigrationIdHeader);
        var migration = host.Require(id);
        var summary = new PageStreamSummary();
        migration.StreamOpened();
        try
        {
            while (await requestStream.MoveNext(context.CancellationToken).ConfigureAwait(false))
            {
                var batch = requestStream.Current;
                var (pages, applied) = migration.Apply(batch);
                summary.Batches++;
                summary.Pages += (ulong)pages;
                summary.PagesApplied += (ulong)applied;
                summary.Bytes += (ulong)batch.Payload.Length;
            }
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.InvalidArgument)
        {
            host.Fail(migration, ex.Status.Detail);
            throw;
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException)
        {
            // The source went away mid-stream. The migration cannot complete without it; discard the partial guest.
            TargetLog.StreamBroke(log, migration.Id, ex.Message);
            host.Fail(migration, $"page stream broke: {ex.Message}");
            throw new RpcException(new Status(StatusCode.Cancelled, "page stream broke"));
        }
        finally
        {
            migration.StreamClosed();
        }

        return summary;
    }

    public override Task<CompleteReply> Complete(CompleteRequest request, ServerCallContext context) => Task.FromResult(host.Complete(request));

    public override Task<CancelReply> Cancel(CancelRequest request, ServerCallContext context) => Task.FromResult(host.Cancel(request));

    public override Task<StatusReply> Status(StatusRequest request, ServerCallContext context) => Task.FromResult(host.Status());
}
