using System.Buffers;
using System.Buffers.Binary;
using Grpc.Core;
using Microsoft.AspNetCore.Connections;
using Migration.Protocol;
using Migration.Shared.Hosting;
using Migration.Shared.Transport;
using Migration.Target.Receiving;

namespace Migration.Target.Services;

/// <summary>
/// One page stream's receiving side, whoever serves its HTTP/2 (<see cref="PageStreamEndpoint"/> under Kestrel,
/// <see cref="PageStreamConnectionHandler"/> on our own connections): the gRPC message framing and its limits, each
/// batch parsed (<see cref="PageBatchWire"/>) and applied to the migration, the summary the response carries, and what
/// a failure does to the migration and answers the source.
/// </summary>
internal sealed class PageStreamReceiver(
    IncomingMigrations migrations, IncomingMigration migration, int maxMessageBytes, ILogger log)
{
    /// <summary>A gRPC message's prefix: compressed flag (1 byte) and big-endian message length (4 bytes).</summary>
    public const int PrefixLength = 5;

    private readonly ReceivedBatch _batch = new();

    public IncomingMigration Migration => migration;

    /// <summary>What was received and applied: the response's one message.</summary>
    public PageStreamSummary Summary { get; } = new();

    /// <summary>
    /// The length of the message whose prefix is <paramref name="prefix"/>; throws the status that ends the stream
    /// for a compressed message or one over the limit.
    /// </summary>
    public int MessageLength(ReadOnlySpan<byte> prefix)
    {
        if (prefix[0] != 0)
        {
            throw RpcErrors.Unimplemented("compressed page batches are not supported");
        }

        uint length = BinaryPrimitives.ReadUInt32BigEndian(prefix[1..]);
        if (length > (uint)maxMessageBytes)
        {
            throw RpcErrors.ResourceExhausted(
                $"a page batch of {length} bytes exceeds the limit of {maxMessageBytes} bytes");
        }

        return (int)length;
    }

    /// <summary>Takes one whole gRPC message off the front of <paramref name="buffer"/>, if it has arrived.</summary>
    public bool TryTakeMessage(ref ReadOnlySequence<byte> buffer, out ReadOnlySequence<byte> message)
    {
        message = default;
        if (buffer.Length < PrefixLength)
        {
            return false;
        }

        Span<byte> prefix = stackalloc byte[PrefixLength];
        buffer.Slice(0, PrefixLength).CopyTo(prefix);
        int length = MessageLength(prefix);
        if (buffer.Length < PrefixLength + length)
        {
            return false;
        }

        message = buffer.Slice(PrefixLength, length);
        buffer = buffer.Slice(PrefixLength + length);
        return true;
    }

    /// <summary>Parses one message (a view of the receive buffer; nothing is kept once this returns) and applies it.</summary>
    public void Apply(ReadOnlySequence<byte> message)
    {
        if (PageBatchWire.Read(message, _batch) is { } error)
        {
            throw RpcErrors.InvalidArgument($"malformed page batch: {error}");
        }

        var (pages, applied) = migration.Apply(_batch);
        Summary.Batches++;
        Summary.Pages += (ulong)pages;
        Summary.PagesApplied += (ulong)applied;
        Summary.Bytes += (ulong)_batch.PayloadLength;
    }

    /// <summary>The status a stream that ended with <paramref name="left"/> bytes of an unfinished message gets.</summary>
    public static RpcException EndedInsideAMessage(long left) =>
        RpcErrors.InvalidArgument($"the stream ended inside a message ({left} bytes left over)");

    /// <summary>Whether <paramref name="ex"/> says the source went away (nobody left to answer), not that it erred.</summary>
    public static bool IsBrokenStream(Exception ex) => ex is IOException or OperationCanceledException
        or ConnectionAbortedException or BadHttpRequestException;

    /// <summary>
    /// The stream failed with <paramref name="ex"/>: fails the migration (the partial guest is discarded) and returns
    /// the status to answer with, or null when the stream broke and there is nobody to answer. A status the stream
    /// earned (a bad batch, a limit) goes back as it is; anything else is a bug here and goes back as Internal.
    /// </summary>
    public Status? Fail(Exception ex, string method)
    {
        ArgumentNullException.ThrowIfNull(ex);
        if (ex is RpcException rpc)
        {
            migrations.Fail(migration, rpc.Status.Detail);
            return rpc.Status;
        }

        if (IsBrokenStream(ex))
        {
            // The source went away mid-stream. The migration cannot complete without it; discard the partial guest.
            TargetLog.StreamBroke(log, migration.Id, ex.Message);
            migrations.Fail(migration, $"page stream broke: {ex.Message}");
            return null;
        }

        TargetLog.HandlerFailed(log, method, ex);
        string reason = $"page stream failed on the target: {ex.GetType().Name}: {ex.Message}";
        migrations.Fail(migration, reason);
        return new Status(StatusCode.Internal, reason);
    }
}
