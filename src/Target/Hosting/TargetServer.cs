using System.Diagnostics.Metrics;
using Grpc.AspNetCore.Server.Model;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Migration.Management;
using Migration.Shared.Hosting;
using Migration.Target.Diagnostics;
using Migration.Target.Receiving;
using Migration.Target.Services;

namespace Migration.Target.Hosting;

/// <summary>
/// The target's gRPC server: Kestrel tuned for bulk page streams, the services, and the warm-up before listening.
/// </summary>
internal static class TargetServer
{
    /// <summary>
    /// Runs until stopped; returns the process exit code (1 when it cannot listen, or bound beyond loopback with
    /// settings safe only on loopback).
    /// </summary>
    public static async Task<int> RunAsync(TargetOptions options)
    {
        var builder = ServerHost.CreateBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Information);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.Logging.AddFilter("Grpc", LogLevel.Warning);
        var listen = ListenUrl.Parse(options.Listen, "--listen");
        builder.WebHost.UseUrls([.. listen.BindUrls]);
        builder.WebHost.UseKestrelHttpsConfiguration(); // the slim builder leaves https:// out unless asked
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            // gRPC, cleartext HTTP/2. On a cleartext endpoint our source's page-stream connections (marked in their
            // first SETTINGS) are served off the transport, without Kestrel's HTTP/2 (PageStreamConnectionHandler).
            // Never on an https:// one: the middleware would run before TLS's and serve a client that skipped TLS,
            // past the client-certificate check; there every connection is Kestrel's.
            bool cleartext = listen.Scheme == Uri.UriSchemeHttp;
            kestrel.ConfigureEndpointDefaults(endpoint =>
            {
                endpoint.Protocols = HttpProtocols.Http2;
                if (cleartext)
                {
                    endpoint.Use(next =>
                    {
                        var pages = endpoint.ApplicationServices.GetRequiredService<PageStreamConnectionHandler>();
                        return connection => pages.OnConnectionAsync(connection, next);
                    });
                }
            });
            var http2 = kestrel.Limits.Http2;
            // Bulk transfer: the defaults (1 MiB connection / 768 KiB stream windows) stall a multi-GiB/s stream on
            // round trips. 32 MiB / 16 MiB keep a few batches in flight per channel.
            http2.InitialConnectionWindowSize = 32 << 20;
            http2.InitialStreamWindowSize = 16 << 20;
            // Larger frames mean fewer frame headers and fewer reads per batch; 1 MiB of the 16 MiB the protocol
            // allows.
            http2.MaxFrameSize = 1 << 20;
            kestrel.Limits.MaxRequestBodySize = null; // streams are long; gRPC enforces per-message limits
            kestrel.ConfigureHttpsDefaults(options.Security.ConfigureHttps);
        });
        // Receive straight into a buffer rather than waiting for data first (one system call per read instead of two),
        // into 64 KiB pool blocks rather than 4 KiB (LargeBlockMemoryPool).
        // Unread bytes a connection may hold: enough for a page-stream connection to wait for a whole batch's frame.
        builder.WebHost.UseSockets(sockets =>
        {
            sockets.WaitForDataBeforeAllocatingBuffer = false;
            sockets.MaxReadBufferSize = PageStreamConnectionHandler.TransportBufferBytes;
        });
        builder.Services.AddSingleton<LargeBlockMemoryPoolFactory>();
        builder.Services.AddSingleton<IMemoryPoolFactory<byte>>(
            services => services.GetRequiredService<LargeBlockMemoryPoolFactory>());
        builder.Services.AddSingleton<IdleMemory>();
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton<ISwitchover, Switchover>();
        builder.Services.AddSingleton<TargetReportWriter>();
        builder.Services.AddSingleton(services => new TargetMetrics(services.GetRequiredService<IMeterFactory>()));
        builder.Services.AddSingleton<IncomingMigrations>();
        builder.Services.AddSingleton<PageStreamEndpoint>();
        builder.Services.AddSingleton<PageStreamConnectionHandler>();
        builder.Services.AddGrpc(grpc =>
        {
            grpc.Interceptors.Add<ErrorInterceptor>();
            grpc.MaxReceiveMessageSize = options.MaxMessageBytes;
            grpc.EnableDetailedErrors = true;
        });
        builder.Services.AddGrpcHealthChecks();
        builder.Services.AddSingleton<IServiceMethodProvider<MigrationService>, MigrationServiceMethods>();
        builder.Services.AddSingleton<IManagementHost, TargetManagementHost>();

        var app = builder.Build();
        // now, not at the first call: --prealloc before listening
        _ = app.Services.GetRequiredService<IncomingMigrations>();
        _ = app.Services.GetRequiredService<IManagementHost>(); // watches for resumed guests from the start
        SwitchoverWarmup.Run(); // the first switchover then runs optimised code (see SwitchoverWarmup)
        MessageWarmup.Run();
        // Compiling beside the start rather than before it: a migration's setup and rounds come first
        _ = Task.Run(SwitchoverJit.Run);
        options.Security.Apply(app);

        app.MapGrpcService<MigrationService>();
        app.MapGrpcService<ManagementService>();
        var pages = app.Services.GetRequiredService<PageStreamEndpoint>();
        app.MapPost(PageStreamEndpoint.Path, pages.HandleAsync);
        app.MapGrpcHealthChecksService();
        app.MapGrpcService<ServerReflection>(); // lists PageStream too, which is not a grpc-dotnet service
        await using (app.ConfigureAwait(false))
        {
            try
            {
                await app.StartAsync().ConfigureAwait(false);
            }
            catch (IOException ex)
            {
                await Console.Error.WriteLineAsync($"error: cannot listen on {options.Listen}: {ex.Message}")
                    .ConfigureAwait(false);
                return 1;
            }

            var server = app.Services.GetRequiredService<IServer>();
            string[] addresses = [.. server.Features.Get<IServerAddressesFeature>()?.Addresses ?? []];
            if (options.Security.BoundProblem(addresses) is { } problem)
            {
                await app.StopAsync().ConfigureAwait(false);
                await Console.Error.WriteLineAsync($"error: cannot listen on {options.Listen}: {problem}")
                    .ConfigureAwait(false);
                return 1;
            }

            // Parents (the demo, the tests) wait for this exact line to learn the port.
            Console.WriteLine($"target listening on {string.Join(' ', addresses)}");
            await app.WaitForShutdownAsync().ConfigureAwait(false);
        }

        return 0;
    }
}
