using Grpc.Core;
using Migration.Protocol;
using Migration.Target.Receiving;

namespace Migration.Target.Services;

/// <summary>
/// The gRPC face of <see cref="IncomingMigrations"/> for the control calls (the proto service <c>Migration</c>);
/// pages arrive through <see cref="PageStreamEndpoint"/>. Bound by <see cref="MigrationServiceMethods"/> rather than
/// the generated base class, so a request that does not decode is a typed rejection.
/// </summary>
internal sealed class MigrationService(IncomingMigrations migrations)
{
    public Task<BeginReply> Begin(BeginRequest request, ServerCallContext context) =>
        Task.FromResult(migrations.Begin(request, Caller(context), context.CancellationToken));

    public Task<CompleteReply> Complete(CompleteRequest request, ServerCallContext context) =>
        Task.FromResult(migrations.Complete(request, Caller(context), AfterReply(context)));

    public Task<CompleteReply> Confirm(ConfirmRequest request, ServerCallContext context) =>
        Task.FromResult(migrations.Confirm(request, Caller(context)));

    public Task<CancelReply> Cancel(CancelRequest request, ServerCallContext context) =>
        Task.FromResult(migrations.Cancel(request, Caller(context)));

    public Task<StatusReply> Status(StatusRequest request, ServerCallContext context) =>
        Task.FromResult(migrations.Status(request, Caller(context)));

    /// <summary>Disposes what a Complete hands over once its response has gone out (or the call broke).</summary>
    private static Action<IDisposable> AfterReply(ServerCallContext context) => disposable =>
        context.GetHttpContext().Response.RegisterForDispose(disposable);

    private static CallerCredentials Caller(ServerCallContext context) =>
        CallerCredentials.Of(context.GetHttpContext());
}
