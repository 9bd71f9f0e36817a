using System.Security.Authentication;
using Grpc.Core;

namespace Migration.Shared.Transport;

/// <summary>
/// The transport's edge: the one place where a gRPC call's failure, or its connection's, becomes a
/// <see cref="MigrationFailedException"/> with a kind and a plain message. Nothing above the transport sees a gRPC
/// type; the caller's own cancellation passes through as the <see cref="OperationCanceledException"/> it is.
/// </summary>
internal static class TransportFailures
{
    /// <summary>
    /// Whether <paramref name="ex"/>, thrown by a gRPC call or its stream, is the call's or the connection's failure:
    /// a status, a broken connection, or (on a stream) a call that is already over, which grpc-dotnet reports as an
    /// <see cref="InvalidOperationException"/> ("the call is complete").
    /// </summary>
    public static bool IsCallFailure(Exception ex) =>
        ex is RpcException or IOException or HttpRequestException or InvalidOperationException;

    /// <summary>The failure <paramref name="ex"/> (a call failure) stands for.</summary>
    public static MigrationFailedException From(Exception ex)
    {
        ArgumentNullException.ThrowIfNull(ex);
        if (Find<AuthenticationException>(ex) is { } tls)
        {
            return new MigrationFailedException(FailureKind.TargetRefused,
                $"the TLS handshake with the target failed: {tls.Message} (the target's certificate must chain to " +
                "--tls-ca; a target with --tls-client-ca needs --tls-client-cert from that CA)", ex);
        }

        return ex is RpcException rpc
            ? new MigrationFailedException(KindOf(rpc.StatusCode), $"{rpc.StatusCode}: {rpc.Status.Detail}", rpc)
            : new MigrationFailedException(FailureKind.ConnectionLost, ex.Message, ex);
    }

    /// <summary>Runs one call; a call failure leaves it as a <see cref="MigrationFailedException"/>.</summary>
    public static async Task<T> Call<T>(Func<Task<T>> call)
    {
        ArgumentNullException.ThrowIfNull(call);
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (Exception ex) when (IsCallFailure(ex))
        {
            throw From(ex);
        }
    }

    /// <inheritdoc cref="Call{T}(Func{Task{T}})"/>
    public static async Task Call(Func<Task> call)
    {
        ArgumentNullException.ThrowIfNull(call);
        try
        {
            await call().ConfigureAwait(false);
        }
        catch (Exception ex) when (IsCallFailure(ex))
        {
            throw From(ex);
        }
    }

    /// <summary>The first <typeparamref name="T"/> in the exception's chain, the RPC's debug exception included.</summary>
    private static T? Find<T>(Exception? ex) where T : Exception
    {
        for (; ex is not null; ex = ex is RpcException rpc ? rpc.Status.DebugException : ex.InnerException)
        {
            if (ex is T found)
            {
                return found;
            }
        }

        return null;
    }

    private static FailureKind KindOf(StatusCode code) => code switch
    {
        StatusCode.DeadlineExceeded => FailureKind.Timeout,
        StatusCode.InvalidArgument or StatusCode.FailedPrecondition or StatusCode.AlreadyExists
            or StatusCode.ResourceExhausted or StatusCode.PermissionDenied or StatusCode.Unauthenticated
            or StatusCode.Unimplemented => FailureKind.TargetRefused,
        _ => FailureKind.ConnectionLost,
    };
}
