using System.Net;

namespace Migration.Shared.Hosting;

/// <summary>Whether an address stays on this machine: the rule both programs' listening checks use.</summary>
public static class Loopback
{
    /// <summary><c>localhost</c>, or a loopback IP literal (127.0.0.0/8, [::1]).</summary>
    public static bool Is(Uri uri)
    {
        ArgumentNullException.ThrowIfNull(uri);
        return uri.IsLoopback || (IPAddress.TryParse(uri.Host.Trim('[', ']'), out var ip) && IPAddress.IsLoopback(ip));
    }
}
