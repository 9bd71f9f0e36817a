using System.IO.Pipelines;
using Google.Protobuf;
using Grpc.Core;
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

        var receiver = new PageStreamReceiver(migrations, migration, options.MaxPageMessageBytes, log);
        migration.StreamOpened();
        try
        {
            await ReceiveAsync(context.Request.BodyReader, receiver, context.RequestAborted).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // the stream's boundary: a bug fails this migration with Internal, never leaves it open
        catch (Exception ex)
#pragma warning restore CA1031
        {
            if (receiver.Fail(ex, Path) is { } status)
            {
                GrpcStatusWriter.Finish(response, status);
            }

            return;
        }
        finally
        {
            migration.StreamClosed();
        }

        await GrpcStatusWriter.WriteMessageAsync(response, receiver.Summary.ToByteArray(), context.RequestAborted)
            .ConfigureAwait(false);
        GrpcStatusWriter.Finish(response, Status.DefaultSuccess);
    }

    private static async Task ReceiveAsync(PipeReader reader, PageStreamReceiver receiver, CancellationToken ct)
    {
        while (true)
        {
            var result = await reader.ReadAsync(ct).ConfigureAwait(false);
            var buffer = result.Buffer;
            try
            {
                while (receiver.TryTakeMessage(ref buffer, out var message))
                {
                    receiver.Apply(message);
                }

                if (result.IsCompleted)
                {
                    if (!buffer.IsEmpty)
                    {
                        throw PageStreamReceiver.EndedInsideAMessage(buffer.Length);
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
}
