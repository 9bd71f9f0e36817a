using System.Net;

namespace Migration.Shared.Hosting;

/// <summary>Whether an address stays on this machine: the rule both programs' listening checks use.</summary>
public static class Loopback
{
    /// <summary>
    /// Whether a host as written is exactly <c>localhost</c> or a loopback IP literal (127.0.0.0/8, [::1]). A URL's
    /// host must be taken from its text (<see cref="ListenUrl.Authority"/>), not from <see cref="Uri.Host"/>: Uri reads
    /// the name <c>loopback</c> as <c>localhost</c> (and <see cref="Uri.IsLoopback"/> agrees), while Kestrel binds every
    /// interface for a name it does not know.
    /// </summary>
    public static bool IsHost(string host)
    {
        ArgumentNullException.ThrowIfNull(host);
        return string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase)
            || (IPAddress.TryParse(host.Trim('[', ']'), out var ip) && IPAddress.IsLoopback(ip));
    }
}
