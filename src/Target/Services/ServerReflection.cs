using Grpc.Health.V1;
using Grpc.Reflection;
using Migration.Protocol;

namespace Migration.Target.Services;

/// <summary>
/// gRPC server reflection over the target's services, named explicitly: <c>PageStream</c> is served off the request
/// pipe (<see cref="PageStreamEndpoint"/>), not by grpc-dotnet, so reflection would not find it among the mapped
/// services on its own.
/// </summary>
internal sealed class ServerReflection() : ReflectionServiceImpl(MigrationReflection.Descriptor.Services.Concat(
    [Health.Descriptor, Grpc.Reflection.V1Alpha.ServerReflection.Descriptor]))
{
}
