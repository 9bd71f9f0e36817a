using System.Net;
using System.Net.Sockets;

namespace Migration.Bench.Peers;

/// <summary>Ports for the programs the benchmark runs beside ours (iperf3, QEMU), on loopback only.</summary>
internal static class Loopback
{
    /// <summary>A port nobody listens on now (the kernel's pick; the caller binds it soon after).</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
