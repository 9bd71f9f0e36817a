using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.AspNetCore.Server.Model;
using Grpc.Core;
using Migration.Protocol;
using Migration.Shared.Hosting;
using MigrationControl = Migration.Protocol.Migration;

namespace Migration.Target.Services;

/// <summary>
/// Binds the control calls of <see cref="MigrationService"/> by hand. The generated binding parses a request before
/// any interceptor runs, so bytes that do not decode reach the client as <c>Unknown</c> ("Exception was thrown by
/// handler"); these marshallers turn them into <c>InvalidArgument</c> naming the message. The paths and types come
/// from the proto's descriptor, so the wire contract is the generated one.
/// </summary>
internal sealed class MigrationServiceMethods : IServiceMethodProvider<MigrationService>
{
    public void OnServiceMethodDiscovery(ServiceMethodProviderContext<MigrationService> context)
    {
        ArgumentNullException.ThrowIfNull(context);
        Add(context, "Begin", BeginRequest.Parser, BeginReply.Parser, static (s, r, c) => s.Begin(r, c));
        Add(context, "Complete", CompleteRequest.Parser, CompleteReply.Parser, static (s, r, c) => s.Complete(r, c));
        Add(context, "Confirm", ConfirmRequest.Parser, CompleteReply.Parser, static (s, r, c) => s.Confirm(r, c));
        Add(context, "Cancel", CancelRequest.Parser, CancelReply.Parser, static (s, r, c) => s.Cancel(r, c));
        Add(context, "Status", StatusRequest.Parser, StatusReply.Parser, static (s, r, c) => s.Status(r, c));
    }

    private static void Add<TRequest, TReply>(ServiceMethodProviderContext<MigrationService> context, string name,
        MessageParser<TRequest> requests, MessageParser<TReply> replies,
        UnaryServerMethod<MigrationService, TRequest, TReply> invoker)
        where TRequest : class, IMessage<TRequest>
        where TReply : class, IMessage<TReply>
    {
        MethodDescriptor descriptor = MigrationControl.Descriptor.FindMethodByName(name)
            ?? throw new InvalidOperationException($"the proto has no method {name}");
        if (descriptor.InputType.ClrType != typeof(TRequest) || descriptor.OutputType.ClrType != typeof(TReply))
        {
            throw new InvalidOperationException($"{name} is bound with the wrong message types");
        }

        var method = new Method<TRequest, TReply>(MethodType.Unary, MigrationControl.Descriptor.FullName, name,
            TypedMarshaller.For(requests), TypedMarshaller.For(replies));
        context.AddUnaryMethod(method, [new HttpMethodMetadata(["POST"])], invoker);
    }
}
