using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Migration.Management;
using Migration.Shared.Hosting;

namespace Migration.Source.Management;

/// <summary>
/// The source's management endpoint: Kestrel, HTTP/2 (cleartext on loopback, TLS beyond it), the one gRPC service,
/// behind the same checks as a target (<see cref="ServerSecurity"/>: mutual TLS, a token).
/// </summary>
internal static class ManagementServer
{
    /// <summary>
    /// Starts listening (port 0 picks a free one); returns the addresses bound, as the server reports them. Throws
    /// <see cref="IOException"/> when it cannot listen, or when it bound beyond loopback with settings safe only on
    /// loopback (<see cref="ServerSecurity.BoundProblem"/>; it is stopped first).
    /// </summary>
    public static async Task<(WebApplication App, IReadOnlyList<string> Addresses)> StartAsync(
        ServerSecurity security, IManagementHost host, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(security);
        var builder = ServerHost.CreateBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls([.. ListenUrl.Parse(security.Listen, "--listen").BindUrls]);
        builder.WebHost.UseKestrelHttpsConfiguration(); // the slim builder leaves https:// out
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.ConfigureEndpointDefaults(e => e.Protocols = HttpProtocols.Http2);
            k.ConfigureHttpsDefaults(security.ConfigureHttps);
        });
        builder.Services.AddGrpc(grpc => grpc.EnableDetailedErrors = true);
        builder.Services.AddSingleton(host);
        var app = builder.Build();
        security.Apply(app);
        app.MapGrpcService<ManagementService>();
        await app.StartAsync(ct).ConfigureAwait(false);
        string[] bound = [.. app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!
            .Addresses];
        if (security.BoundProblem(bound) is { } problem)
        {
            await app.StopAsync(CancellationToken.None).ConfigureAwait(false);
            await app.DisposeAsync().ConfigureAwait(false);
            throw new IOException(problem);
        }

        return (app, bound);
    }
}
