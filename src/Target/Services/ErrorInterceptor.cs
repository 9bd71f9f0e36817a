using Grpc.Core;
using Grpc.Core.Interceptors;
using Migration.Shared.Hosting;
using Migration.Target.Receiving;

namespace Migration.Target.Services;

/// <summary>
/// The boundary where a handler's unexpected exception becomes a status: Internal with the exception's message, and a
/// log line, never <c>Unknown</c>. Expected rejections are <see cref="RpcException"/>s built by <see cref="RpcErrors"/>
/// and pass through unchanged.
/// </summary>
internal sealed class ErrorInterceptor(ILogger<ErrorInterceptor> log) : Interceptor
{
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request,
        ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        ArgumentNullException.ThrowIfNull(context);
        try
        {
            return await continuation(request, context).ConfigureAwait(false);
        }
        catch (RpcException)
        {
            throw;
        }
#pragma warning disable CA1031 // the conversion boundary: every other exception becomes Internal, logged
        catch (Exception ex)
#pragma warning restore CA1031
        {
            TargetLog.HandlerFailed(log, context.Method, ex);
            throw RpcErrors.Internal($"{context.Method} failed on the target: {ex.GetType().Name}: {ex.Message}");
        }
    }
}
