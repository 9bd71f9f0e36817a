using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Migration.Management;

namespace Migration.Source.Management;

/// <summary>The source's management endpoint: Kestrel, cleartext HTTP/2, the one gRPC service.</summary>
internal static class ManagementServer
{
    /// <summary>Starts listening on <paramref name="listen"/> (port 0 picks a free one); returns the bound address.</summary>
    public static async Task<(WebApplication App, Uri Address)> StartAsync(string listen, IManagementHost host,
        CancellationToken ct)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls(listen);
        builder.WebHost.ConfigureKestrel(k => k.ConfigureEndpointDefaults(e => e.Protocols = HttpProtocols.Http2));
        builder.Services.AddGrpc(grpc => grpc.EnableDetailedErrors = true);
        builder.Services.AddSingleton(host);
        var app = builder.Build();
        app.MapGrpcService<ManagementService>();
        await app.StartAsync(ct).ConfigureAwait(false);
        string bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!
            .Addresses.First();
        return (app, new Uri(bound.Replace("[::]", "127.0.0.1", StringComparison.Ordinal)));
    }
}
