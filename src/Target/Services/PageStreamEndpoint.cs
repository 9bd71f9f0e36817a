using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Connections;
using Migration.Protocol;
using Migration.Shared.Hosting;
using Migration.Shared.Protocol;
using Migration.Shared.Transport;
using Migration.Target.Receiving;

namespace Migration.Target.Services;

/// <summary>
/// <c>PageStream.SendPages</c>, served straight off the request body's <see cref="PipeReader"/>: each gRPC message is
/// framed, parsed (<see cref="PageBatchWire"/>) and its pages decoded into guest RAM while the bytes are still in
/// Kestrel's receive buffers, and only then is the buffer released (Read, process, AdvanceTo, as Kestrel's own loops
/// are shaped). No protobuf object, no copy of the payload, no allocation per message.
/// </summary>
/// <remarks>
/// <para>It speaks gRPC exactly (length-prefixed messages, <c>application/grpc</c>, status in the trailers, or in the
/// headers when nothing was sent), so any client generated from the proto file can send pages (the tests do). Served
/// through grpc-dotnet's handler instead, each message had to be copied out of the receive buffer, because the buffer
/// is released before the handler sees the message.</para>
/// <para>A batch larger than <see cref="TargetOptions.MaxPageMessageBytes"/>, a compressed message, a malformed batch
/// or a broken stream fails the migration and discards the partial guest; the target takes the next one.</para>
/// </remarks>
internal sealed class PageStreamEndpoint(
    IncomingMigrations migrations, TargetOptions options, ILogger<PageStreamEndpoint> log)
{
    /// <summary>The gRPC method path of <c>migration.v1.PageStream/SendPages</c>.</summary>
    public const string Path = "/" + PageBatchWire.ServiceName + "/" + PageBatchWire.SendPagesMethod;

    private const int HeaderLength = 5; // compressed flag (1 byte) + big-endian message length (4 bytes)

    public async Task HandleAsync(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var response = context.Response;
        if (!GrpcStatusWriter.IsGrpcRequest(context.Request))
        {
            response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
            return;
        }

        response.ContentType = GrpcStatusWriter.ContentType;
        IncomingMigration migration;
        try
        {
            migration = migrations.RequireReceiving(context.Request.Headers[WireNames.MigrationIdHeader],
                CallerCredentials.Of(context));
        }
        catch (RpcException ex)
        {
            GrpcStatusWriter.Finish(response, ex.Status);
            return;
        }

        var summary = new PageStreamSummary();
        var batch = new ReceivedBatch();
        migration.StreamOpened();
        try
        {
            await ReceiveAsync(context.Request.BodyReader, migration, batch, summary, context.RequestAborted)
                .ConfigureAwait(false);
        }
        catch (RpcException ex)
        {
            migrations.Fail(migration, ex.Status.Detail);
            GrpcStatusWriter.Finish(response, ex.Status);
            return;
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or ConnectionAbortedException
            or BadHttpRequestException)
        {
            // The source went away mid-stream. The migration cannot complete without it; discard the partial guest.
            TargetLog.StreamBroke(log, migration.Id, ex.Message);
            migrations.Fail(migration, $"page stream broke: {ex.Message}");
            return;
        }
#pragma warning disable CA1031 // the stream's boundary: a bug fails this migration with Internal, never leaves it open
        catch (Exception ex)
#pragma warning restore CA1031
        {
            TargetLog.HandlerFailed(log, Path, ex);
            string reason = $"page stream failed on the target: {ex.GetType().Name}: {ex.Message}";
            migrations.Fail(migration, reason);
            GrpcStatusWriter.Finish(response, new Status(StatusCode.Internal, reason));
            return;
        }
        finally
        {
            migration.StreamClosed();
        }

        await GrpcStatusWriter.WriteMessageAsync(response, summary.ToByteArray(), context.RequestAborted)
            .ConfigureAwait(false);
        GrpcStatusWriter.Finish(response, Status.DefaultSuccess);
    }

    private async Task ReceiveAsync(PipeReader reader, IncomingMigration migration, ReceivedBatch batch,
        PageStreamSummary summary, CancellationToken ct)
    {
        while (true)
        {
            var result = await reader.ReadAsync(ct).ConfigureAwait(false);
            var buffer = result.Buffer;
            try
            {
                while (TryTakeMessage(ref buffer, out var message))
                {
                    if (PageBatchWire.Read(message, batch) is { } error)
                    {
                        throw RpcErrors.InvalidArgument($"malformed page batch: {error}");
                    }

                    var (pages, applied) = migration.Apply(batch);
                    summary.Batches++;
                    summary.Pages += (ulong)pages;
                    summary.PagesApplied += (ulong)applied;
                    summary.Bytes += (ulong)batch.PayloadLength;
                }

                if (result.IsCompleted)
                {
                    if (!buffer.IsEmpty)
                    {
                        throw RpcErrors.InvalidArgument(
                            $"the stream ended inside a message ({buffer.Length} bytes left over)");
                    }

                    return;
                }
            }
            finally
            {
                // Everything before buffer.Start is applied; the rest is an incomplete message: wait for more.
                reader.AdvanceTo(buffer.Start, buffer.End);
            }
        }
    }

    /// <summary>Takes one whole gRPC message off the front of <paramref name="buffer"/>, if it has arrived.</summary>
    private bool TryTakeMessage(ref ReadOnlySequence<byte> buffer, out ReadOnlySequence<byte> message)
    {
        message = default;
        if (buffer.Length < HeaderLength)
        {
            return false;
        }

        Span<byte> header = stackalloc byte[HeaderLength];
        buffer.Slice(0, HeaderLength).CopyTo(header);
        if (header[0] != 0)
        {
            throw RpcErrors.Unimplemented("compressed page batches are not supported");
        }

        uint length = BinaryPrimitives.ReadUInt32BigEndian(header[1..]);
        if (length > (uint)options.MaxPageMessageBytes)
        {
            throw RpcErrors.ResourceExhausted(
                $"a page batch of {length} bytes exceeds the limit of {options.MaxPageMessageBytes} bytes");
        }

        if (buffer.Length < HeaderLength + length)
        {
            return false;
        }

        message = buffer.Slice(HeaderLength, length);
        buffer = buffer.Slice(HeaderLength + length);
        return true;
    }
}
