using System.Buffers.Binary;
using System.Text;
using Grpc.Core;
using Microsoft.AspNetCore.Http;

namespace Migration.Shared.Hosting;

/// <summary>
/// The few pieces of the gRPC protocol the hand-served page stream needs: recognising a gRPC request, writing one
/// length-prefixed message, and ending the call with a status (in the trailers, or in the headers of a response that
/// sent nothing, gRPC's "trailers-only" form).
/// </summary>
internal static class GrpcStatusWriter
{
    public const string ContentType = "application/grpc";

    public static bool IsGrpcRequest(HttpRequest request) =>
        HttpMethods.IsPost(request.Method)
        && request.ContentType is { } type
        && type.StartsWith(ContentType, StringComparison.OrdinalIgnoreCase);

    public static async Task WriteMessageAsync(HttpResponse response, byte[] message, CancellationToken ct)
    {
        var writer = response.BodyWriter;
        var span = writer.GetSpan(5 + message.Length);
        span[0] = 0; // not compressed
        BinaryPrimitives.WriteUInt32BigEndian(span[1..], (uint)message.Length);
        message.CopyTo(span[5..]);
        writer.Advance(5 + message.Length);
        await writer.FlushAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Ends the call with <paramref name="status"/>.</summary>
    public static void Finish(HttpResponse response, Status status)
    {
        string code = ((int)status.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (!response.HasStarted)
        {
            response.Headers["grpc-status"] = code;
            if (status.Detail.Length > 0)
            {
                response.Headers["grpc-message"] = PercentEncode(status.Detail);
            }

            return;
        }

        response.AppendTrailer("grpc-status", code);
        if (status.Detail.Length > 0)
        {
            response.AppendTrailer("grpc-message", PercentEncode(status.Detail));
        }
    }

    /// <summary>The gRPC spec's encoding of grpc-message: UTF-8, bytes outside printable ASCII and '%' as %XX.</summary>
    internal static string PercentEncode(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (byte b in Encoding.UTF8.GetBytes(text))
        {
            if (b is >= 0x20 and <= 0x7E && b != (byte)'%')
            {
                sb.Append((char)b);
            }
            else
            {
                sb.Append('%').Append(b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
            }
        }

        return sb.ToString();
    }
}
