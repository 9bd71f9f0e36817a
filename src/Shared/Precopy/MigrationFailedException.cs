using Grpc.Core;

namespace Migration.Shared.Precopy;

/// <summary>Why a migration failed, in categories a caller can act on.</summary>
public enum FailureKind
{
    /// <summary>The target could not be reached, or the connection to it was lost.</summary>
    ConnectionLost,

    /// <summary>The target refused a request (bad geometry, busy, a protocol error it found).</summary>
    TargetRefused,

    /// <summary>The guest dirties memory faster than the link can converge within the limits.</summary>
    NotConverging,

    /// <summary>The target rebuilt the guest and it did not verify (digests or self-check).</summary>
    VerificationFailed,

    /// <summary>A deadline passed (the target did not answer in time).</summary>
    Timeout,

    /// <summary>The user cancelled.</summary>
    Cancelled,
}

/// <summary>The migration could not complete, for a reason the engine states.</summary>
public sealed class MigrationFailedException : Exception
{
    public MigrationFailedException(FailureKind kind, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Kind = kind;
    }

    public FailureKind Kind { get; }

    /// <summary>
    /// Whether the engine turns <paramref name="ex"/> into a failed migration (rather than a bug to surface).
    /// </summary>
    public static bool IsMigrationFailure(Exception ex) => ex is MigrationFailedException or RpcException or IOException
        or OperationCanceledException or HttpRequestException or InvalidOperationException;

    /// <summary>
    /// The one place where transport and runtime errors become a failure with a kind and a plain message.
    /// </summary>
    public static MigrationFailedException From(Exception ex, bool cancelledByUser)
    {
        ArgumentNullException.ThrowIfNull(ex);
        if (cancelledByUser)
        {
            return new MigrationFailedException(FailureKind.Cancelled, "cancelled on request", ex);
        }

        if (Find<System.Security.Authentication.AuthenticationException>(ex) is { } tls)
        {
            return new MigrationFailedException(FailureKind.TargetRefused,
                $"the TLS handshake with the target failed: {tls.Message} (the target's certificate must chain to " +
                "--tls-ca; a target with --tls-client-ca needs --tls-client-cert from that CA)", ex);
        }

        return ex switch
        {
            MigrationFailedException failed => failed,
            RpcException rpc =>
                new MigrationFailedException(KindOf(rpc.StatusCode), $"{rpc.StatusCode}: {rpc.Status.Detail}", rpc),
            _ => new MigrationFailedException(FailureKind.ConnectionLost, ex.Message, ex),
        };
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
