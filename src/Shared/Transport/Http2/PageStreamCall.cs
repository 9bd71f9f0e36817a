using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using Grpc.Core;

namespace Migration.Shared.Transport.Http2;

/// <summary>
/// One gRPC client-streaming call on a <see cref="PageStreamConnection"/>: messages go out on the writer's thread, and
/// the response (one message, then the status in the trailers) is read by the connection's reader.
/// </summary>
internal sealed class PageStreamCall
{
    private const int GrpcPrefix = 5; // compressed flag + big-endian length
    private readonly PageStreamConnection _connection;
    private readonly TaskCompletionSource<byte[]> _response = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ArrayBufferWriter<byte> _body = new();
    private bool _headersSeen;
    private bool _requestEnded;

    public PageStreamCall(PageStreamConnection connection, int id, int sendWindow)
    {
        _connection = connection;
        Id = id;
        SendWindow = sendWindow;
    }

    public int Id { get; }

    /// <summary>Flow-control credit toward the target for this stream; guarded by the connection.</summary>
    internal long SendWindow { get; set; }

    /// <summary>The response's one message once the target ends the call with OK; else faults with its status.</summary>
    public Task<byte[]> Response => _response.Task;

    /// <inheritdoc cref="PageStreamConnection.WriteMessage"/>
    public void WriteMessage(Span<IoVector> message, int length, IoVector[] scratch, byte[] frameHeaders) =>
        _connection.WriteMessage(this, message, length, scratch, frameHeaders);

    /// <summary>Ends the request (END_STREAM); the response follows.</summary>
    public void CompleteRequest()
    {
        ThrowIfOver();
        _connection.SendEndStream(this);
        _requestEnded = true;
    }

    /// <summary>Abandons the call: RST_STREAM unless it is over, and the response fails as cancelled.</summary>
    public void Cancel()
    {
        if (!_response.Task.IsCompleted || !_requestEnded)
        {
            _connection.Reset(this);
        }

        Fail(new RpcException(new Status(StatusCode.Cancelled, "the page stream was cancelled")));
    }

    /// <summary>
    /// Throws when the call is over before the source ended it: the target's status when it answered early (it failed
    /// the migration), or the failure that ended it.
    /// </summary>
    internal void ThrowIfOver()
    {
        var response = _response.Task;
        if (!response.IsCompleted)
        {
            return;
        }

        if (response.Exception?.InnerException is RpcException rpc)
        {
            throw new RpcException(rpc.Status);
        }

        throw new InvalidOperationException("the target ended the page stream before the source did");
    }

    internal void OnHeaders(List<KeyValuePair<string, string>> fields, bool endStream)
    {
        if (!_headersSeen)
        {
            _headersSeen = true;
            string? status = Field(fields, ":status");
            if (status != "200")
            {
                Fail(new RpcException(new Status(FromHttpStatus(status),
                    $"the target answered the page stream with HTTP status {status ?? "(none)"}" +
                    (Field(fields, "grpc-message") is { } m ? $": {Uri.UnescapeDataString(m)}" : ""))));
                return;
            }

            if (!endStream)
            {
                return; // the response's headers; the message and the trailers follow
            }
        }
        else if (!endStream)
        {
            Fail(Protocol("a second header block that does not end the stream"));
            return;
        }

        Finish(fields);
    }

    internal void OnData(ReadOnlySpan<byte> data, bool endStream)
    {
        if (!_headersSeen)
        {
            Fail(Protocol("DATA before the response's headers"));
            return;
        }

        _body.Write(data);
        if (endStream)
        {
            Fail(new RpcException(new Status(StatusCode.Internal,
                "the target ended the page stream without a gRPC status")));
        }
    }

    internal void OnReset(uint code)
    {
        if (_response.Task.IsCompleted)
        {
            _connection.Forget(this); // RST_STREAM NO_ERROR after the trailers: the target read enough of the request
            return;
        }

        var status = code switch
        {
            Http2ErrorCodes.Cancel => StatusCode.Cancelled,
            Http2ErrorCodes.RefusedStream => StatusCode.Unavailable,
            _ => StatusCode.Internal,
        };
        Fail(new RpcException(new Status(status, $"the target reset the page stream ({Http2ErrorCodes.Name(code)})")));
    }

    internal void Fail(RpcException failure)
    {
        _response.TrySetException(failure);
        _connection.Forget(this);
    }

    private void Finish(List<KeyValuePair<string, string>> trailers)
    {
        _connection.Forget(this);
        string? code = Field(trailers, "grpc-status");
        if (code is null || !int.TryParse(code, NumberStyles.None, CultureInfo.InvariantCulture, out int value))
        {
            _response.TrySetException(new RpcException(new Status(StatusCode.Internal,
                $"the target ended the page stream with no valid grpc-status ({code ?? "none"})")));
            return;
        }

        if (value != 0)
        {
            string detail = Field(trailers, "grpc-message") is { } message ? Uri.UnescapeDataString(message) : "";
            _response.TrySetException(new RpcException(new Status((StatusCode)value, detail)));
            return;
        }

        var body = _body.WrittenSpan;
        if (body.Length < GrpcPrefix || body[0] != 0
            || BinaryPrimitives.ReadUInt32BigEndian(body[1..]) != (uint)(body.Length - GrpcPrefix))
        {
            _response.TrySetException(Protocol($"a response of {body.Length} bytes that is not one gRPC message"));
            return;
        }

        _response.TrySetResult(body[GrpcPrefix..].ToArray());
    }

    private static string? Field(List<KeyValuePair<string, string>> fields, string name)
    {
        foreach (var (key, value) in fields)
        {
            if (key == name)
            {
                return value;
            }
        }

        return null;
    }

    /// <summary>gRPC's mapping of an HTTP status that is not 200 (doc/http-grpc-status-mapping.md).</summary>
    private static StatusCode FromHttpStatus(string? status) => status switch
    {
        "400" => StatusCode.Internal,
        "401" => StatusCode.Unauthenticated,
        "403" => StatusCode.PermissionDenied,
        "404" => StatusCode.Unimplemented,
        "429" or "502" or "503" or "504" => StatusCode.Unavailable,
        _ => StatusCode.Unknown,
    };

    private static RpcException Protocol(string what) =>
        new(new Status(StatusCode.Internal, $"the target's answer to the page stream is malformed: {what}"));
}
