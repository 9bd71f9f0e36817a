using Grpc.Core;

namespace Migration.Shared.Hosting;

/// <summary>
/// Every <see cref="RpcException"/> either program throws at a client is built here (grpc-dotnet turns it into the
/// call's status at one boundary): the target's migration service, the management API and the typed marshallers refuse
/// with these, so tests can assert codes and a handler never leaks an exception as <c>Unknown</c>. (The two endpoints
/// that answer before any gRPC handler runs write their status with <see cref="GrpcStatusWriter"/>.)
/// </summary>
internal static class RpcErrors
{
    /// <summary>The request itself is malformed or names something impossible.</summary>
    public static RpcException InvalidArgument(string detail) => New(StatusCode.InvalidArgument, detail);

    /// <summary>
    /// The request is fine but the process is not in a state to take it (busy, wrong migration, not begun, the guest
    /// paused or gone).
    /// </summary>
    public static RpcException FailedPrecondition(string detail) => New(StatusCode.FailedPrecondition, detail);

    /// <summary>The target cannot afford what the request asks (guest RAM).</summary>
    public static RpcException ResourceExhausted(string detail) => New(StatusCode.ResourceExhausted, detail);

    /// <summary>The thing the request would create exists already (a migration id used before).</summary>
    public static RpcException AlreadyExists(string detail) => New(StatusCode.AlreadyExists, detail);

    /// <summary>The caller lacks the credentials: the shared token, or the key of the migration it names.</summary>
    public static RpcException Unauthenticated(string detail) => New(StatusCode.Unauthenticated, detail);

    /// <summary>The caller is known but may not do this (a target the operator did not allow credentials to).</summary>
    public static RpcException PermissionDenied(string detail) => New(StatusCode.PermissionDenied, detail);

    /// <summary>The request asks for something this build does not do (compressed gRPC messages).</summary>
    public static RpcException Unimplemented(string detail) => New(StatusCode.Unimplemented, detail);

    /// <summary>A bug on the target; the detail says what failed, so nothing reaches a client as Unknown.</summary>
    public static RpcException Internal(string detail) => New(StatusCode.Internal, detail);

    /// <summary>The call's stream broke or was cancelled.</summary>
    public static RpcException Cancelled(string detail) => New(StatusCode.Cancelled, detail);

    private static RpcException New(StatusCode code, string detail) => new(new Status(code, detail));
}
