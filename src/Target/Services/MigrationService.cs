using Grpc.Core;
using Migration.Protocol;
using Migration.Target.Receiving;

namespace Migration.Target.Services;

/// <summary>The gRPC face of <see cref="MigrationHost"/> for the control calls; pages arrive through <see cref="PageStreamService"/>.</summary>
internal sealed class MigrationService(MigrationHost host) : Protocol.Migration.MigrationBase
{
    public const string MigrationIdHeader = "migration-id";

    public override Task<BeginReply> Begin(BeginRequest request, ServerCallContext context) => Task.FromResult(host.Begin(request));

    public override Task<CompleteReply> Complete(CompleteRequest request, ServerCallContext context) => Task.FromResult(host.Complete(request));

    public override Task<CancelReply> Cancel(CancelRequest request, ServerCallContext context) => Task.FromResult(host.Cancel(request));

    public override Task<StatusReply> Status(StatusRequest request, ServerCallContext context) => Task.FromResult(host.Status());
}
