using Grpc.Net.Client;

namespace Migration.Shared.Transport;

/// <summary>
/// gRPC channels for the control calls (Begin, Complete, Status, Cancel, the management API): grpc-dotnet over
/// <see cref="SocketsHttpHandler"/>, which suits small calls. Page streams have a client of their own
/// (<see cref="Http2.PageStreamConnection"/>).
/// </summary>
internal static class ControlChannel
{
    public static GrpcChannel Create(Uri target, TransportSecurity security)
    {
        ArgumentNullException.ThrowIfNull(security);
        return GrpcChannel.ForAddress(target, new GrpcChannelOptions
        {
            // One handler per channel = one TCP connection per channel.
            HttpHandler = new SocketsHttpHandler
            {
                EnableMultipleHttp2Connections = false,
                ConnectTimeout = TimeSpan.FromSeconds(10),
                KeepAlivePingDelay = TimeSpan.FromSeconds(10),
                KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
                SslOptions = security.ClientTls(),
            },
            MaxSendMessageSize = 64 << 20,
            MaxReceiveMessageSize = 64 << 20,
            // The handler is ours: disposing the channel closes its connection (left to the pool, an idle connection
            // lives on for a minute, kept up by the pings, and a long-lived target collects them).
            DisposeHttpClient = true,
        });
    }
}
