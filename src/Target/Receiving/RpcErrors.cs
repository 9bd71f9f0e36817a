using Grpc.Core;

namespace Migration.Target.Receiving;

/// <summary>
/// Every status the target sends a client is built here (grpc-dotnet converts at one boundary too), so tests can
/// assert codes and a handler never leaks an exception as <c>Unknown</c>.
/// </summary>
internal static class RpcErrors
{
    /// <summary>The request itself is malformed or names something impossible.</summary>
    public static RpcException InvalidArgument(string detail) => New(StatusCode.InvalidArgument, detail);

    /// <summary>
    /// The request is fine but the target is not in a state to take it (busy, wrong migration, not begun).
    /// </summary>
    public static RpcException FailedPrecondition(string detail) => New(StatusCode.FailedPrecondition, detail);

    /// <summary>The target cannot afford what the request asks (guest RAM).</summary>
    public static RpcException ResourceExhausted(string detail) => New(StatusCode.ResourceExhausted, detail);

    /// <summary>The thing the request would create exists already (a migration id used before).</summary>
    public static RpcException AlreadyExists(string detail) => New(StatusCode.AlreadyExists, detail);

    /// <summary>The caller lacks the credentials: the shared token, or the key of the migration it names.</summary>
    public static RpcException Unauthenticated(string detail) => New(StatusCode.Unauthenticated, detail);

    /// <summary>A bug on the target; the detail says what failed, so nothing reaches a client as Unknown.</summary>
    public static RpcException Internal(string detail) => New(StatusCode.Internal, detail);

    /// <summary>The call's stream broke or was cancelled.</summary>
    public static RpcException Cancelled(string detail) => New(StatusCode.Cancelled, detail);

    private static RpcException New(StatusCode code, string detail) => new(new Status(code, detail));
}
