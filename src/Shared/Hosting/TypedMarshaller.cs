using Google.Protobuf;
using Grpc.Core;

namespace Migration.Shared.Hosting;

/// <summary>
/// Protobuf in and out, with bytes that do not decode as a typed rejection: <c>InvalidArgument</c> naming the message.
/// The generated bindings parse a request before any handler or interceptor runs and answer a parse failure with
/// <c>Unknown</c> ("Exception was thrown by handler") and a logged stack trace; services bound with these marshallers
/// do not. (The target's migration service binds its control calls the same way.)
/// </summary>
public static class TypedMarshaller
{
    public static Marshaller<T> For<T>(MessageParser<T> parser) where T : class, IMessage<T>
    {
        ArgumentNullException.ThrowIfNull(parser);
        return Marshallers.Create<T>(
            static (message, context) =>
            {
                context.SetPayloadLength(message.CalculateSize());
                message.WriteTo(context.GetBufferWriter());
                context.Complete();
            },
            context =>
            {
                try
                {
                    return parser.ParseFrom(context.PayloadAsReadOnlySequence());
                }
                catch (InvalidProtocolBufferException ex)
                {
                    throw RpcErrors.InvalidArgument(
                        $"{typeof(T).Name} does not decode as protobuf ({context.PayloadLength} bytes): {ex.Message}");
                }
            });
    }
}
