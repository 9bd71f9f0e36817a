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
        Task.FromResult(migrations.Begin(request, Caller(context)));

    public Task<CompleteReply> Complete(CompleteRequest request, ServerCallContext context) =>
        Task.FromResult(migrations.Complete(request, Caller(context)));

    public Task<CompleteReply> Confirm(ConfirmRequest request, ServerCallContext context) =>
        Task.FromResult(migrations.Confirm(request, Caller(context)));

    public Task<CancelReply> Cancel(CancelRequest request, ServerCallContext context) =>
        Task.FromResult(migrations.Cancel(request, Caller(context)));

    public Task<StatusReply> Status(StatusRequest request, ServerCallContext context) =>
        Task.FromResult(migrations.Status(request, Caller(context)));

    private static CallerCredentials Caller(ServerCallContext context) =>
        CallerCredentials.Of(context.GetHttpContext());
}
