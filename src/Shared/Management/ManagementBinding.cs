using Google.Protobuf;
using Grpc.Core;
using Migration.Shared.Hosting;

namespace Migration.Management;

/// <summary>
/// The management service's binding, in place of the generated <c>Management.ManagementBase</c>: the same paths and
/// message types (taken from the proto's descriptor), with <see cref="TypedMarshaller"/>s, so bytes that do not
/// decode are INVALID_ARGUMENT naming the message rather than UNKNOWN with a stack trace in the log. grpc-dotnet finds
/// each handler by the method's name among the overrides of these members.
/// </summary>
[BindServiceMethod(typeof(ManagementBinding), nameof(BindService))]
public abstract class ManagementBinding
{
    public abstract Task<VmInfo> QueryVm(QueryVmRequest request, ServerCallContext context);

    public abstract Task<BalloonInfo> SetBalloon(SetBalloonRequest request, ServerCallContext context);

    public abstract Task<BalloonInfo> QueryBalloon(QueryBalloonRequest request, ServerCallContext context);

    public abstract Task<GuestStatsInfo> QueryStats(QueryStatsRequest request, ServerCallContext context);

    public abstract Task<GuestStatsInfo> SetStatsPolling(SetStatsPollingRequest request, ServerCallContext context);

    public abstract Task WatchEvents(WatchEventsRequest request, IServerStreamWriter<VmEvent> responseStream,
        ServerCallContext context);

    public abstract Task<MigrationInfo> StartMigration(StartMigrationRequest request, ServerCallContext context);

    public abstract Task<MigrationInfo> QueryMigration(QueryMigrationRequest request, ServerCallContext context);

    public abstract Task<MigrationInfo> CancelMigration(CancelMigrationRequest request, ServerCallContext context);

    public abstract Task<MigrationInfo> SetMigrationParameters(SetMigrationParametersRequest request,
        ServerCallContext context);

    /// <summary>Called by grpc-dotnet with no instance: it resolves the service per call.</summary>
    public static void BindService(ServiceBinderBase binder, ManagementBinding? service)
    {
        ArgumentNullException.ThrowIfNull(binder);
        binder.AddMethod(Unary("QueryVm", QueryVmRequest.Parser, VmInfo.Parser),
            (UnaryServerMethod<QueryVmRequest, VmInfo>?)null);
        binder.AddMethod(Unary("SetBalloon", SetBalloonRequest.Parser, BalloonInfo.Parser),
            (UnaryServerMethod<SetBalloonRequest, BalloonInfo>?)null);
        binder.AddMethod(Unary("QueryBalloon", QueryBalloonRequest.Parser, BalloonInfo.Parser),
            (UnaryServerMethod<QueryBalloonRequest, BalloonInfo>?)null);
        binder.AddMethod(Unary("QueryStats", QueryStatsRequest.Parser, GuestStatsInfo.Parser),
            (UnaryServerMethod<QueryStatsRequest, GuestStatsInfo>?)null);
        binder.AddMethod(Unary("SetStatsPolling", SetStatsPollingRequest.Parser, GuestStatsInfo.Parser),
            (UnaryServerMethod<SetStatsPollingRequest, GuestStatsInfo>?)null);
        binder.AddMethod(Method("WatchEvents", MethodType.ServerStreaming, WatchEventsRequest.Parser, VmEvent.Parser),
            (ServerStreamingServerMethod<WatchEventsRequest, VmEvent>?)null);
        binder.AddMethod(Unary("StartMigration", StartMigrationRequest.Parser, MigrationInfo.Parser),
            (UnaryServerMethod<StartMigrationRequest, MigrationInfo>?)null);
        binder.AddMethod(Unary("QueryMigration", QueryMigrationRequest.Parser, MigrationInfo.Parser),
            (UnaryServerMethod<QueryMigrationRequest, MigrationInfo>?)null);
        binder.AddMethod(Unary("CancelMigration", CancelMigrationRequest.Parser, MigrationInfo.Parser),
            (UnaryServerMethod<CancelMigrationRequest, MigrationInfo>?)null);
        binder.AddMethod(Unary("SetMigrationParameters", SetMigrationParametersRequest.Parser, MigrationInfo.Parser),
            (UnaryServerMethod<SetMigrationParametersRequest, MigrationInfo>?)null);
    }

    private static Method<TRequest, TReply> Unary<TRequest, TReply>(string name, MessageParser<TRequest> requests,
        MessageParser<TReply> replies)
        where TRequest : class, IMessage<TRequest>
        where TReply : class, IMessage<TReply> => Method(name, MethodType.Unary, requests, replies);

    private static Method<TRequest, TReply> Method<TRequest, TReply>(string name, MethodType type,
        MessageParser<TRequest> requests, MessageParser<TReply> replies)
        where TRequest : class, IMessage<TRequest>
        where TReply : class, IMessage<TReply>
    {
        var descriptor = Management.Descriptor.FindMethodByName(name)
            ?? throw new InvalidOperationException($"the proto has no method {name}");
        if (descriptor.InputType.ClrType != typeof(TRequest) || descriptor.OutputType.ClrType != typeof(TReply)
            || descriptor.IsServerStreaming != (type == MethodType.ServerStreaming) || descriptor.IsClientStreaming)
        {
            throw new InvalidOperationException($"{name} is bound with the wrong message types or streaming");
        }

        return new Method<TRequest, TReply>(type, Management.Descriptor.FullName, name,
            TypedMarshaller.For(requests), TypedMarshaller.For(replies));
    }
}
