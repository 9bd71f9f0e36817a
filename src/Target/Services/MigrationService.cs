using Grpc.Core;
using Migration.Protocol;
using Migration.Target.Receiving;
using MigrationControl = Migration.Protocol.Migration;

namespace Migration.Target.Services;

/// <summary>
/// The gRPC face of <see cref="IncomingMigrations"/> for the control calls (the proto service <c>Migration</c>);
/// pages arrive through <see cref="PageStreamEndpoint"/>.
/// </summary>
internal sealed class MigrationService(IncomingMigrations migrations) : MigrationControl.MigrationBase
{
    public override Task<BeginReply> Begin(BeginRequest request, ServerCallContext context) =>
        Task.FromResult(migrations.Begin(request, Caller(context)));

    public override Task<CompleteReply> Complete(CompleteRequest request, ServerCallContext context) =>
        Task.FromResult(migrations.Complete(request, Caller(context)));

    public override Task<CancelReply> Cancel(CancelRequest request, ServerCallContext context) =>
        Task.FromResult(migrations.Cancel(request, Caller(context)));

    public override Task<StatusReply> Status(StatusRequest request, ServerCallContext context) =>
        Task.FromResult(migrations.Status(request, Caller(context)));

    private static CallerCredentials Caller(ServerCallContext context) =>
        CallerCredentials.Of(context.GetHttpContext());
}
