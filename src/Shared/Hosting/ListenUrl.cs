using System.Net;
using System.Net.Sockets;

namespace Migration.Shared.Hosting;

/// <summary>
/// A listen address as both programs take it (the target's and <c>run</c>'s <c>--listen</c>): checked before anything
/// starts, so that a URL Kestrel would refuse, or bind otherwise than it reads, is a usage error naming the flag rather
/// than an exception after a guest booted. Kestrel is then given the address exactly as it was judged.
/// </summary>
public sealed record ListenUrl
{
    private ListenUrl(string scheme, string host, int port)
    {
        Scheme = scheme;
        Host = host;
        Port = port;
    }

    /// <summary>http or https.</summary>
    public string Scheme { get; }

    /// <summary>
    /// The host as written (lower case; an IPv6 literal in brackets), not as <see cref="System.Uri"/> reads it: Uri
    /// makes <c>loopback</c> <c>localhost</c>, while Kestrel binds every interface for that name.
    /// </summary>
    public string Host { get; }

    public int Port { get; }

    /// <summary>Whether the host is exactly <c>localhost</c> or a loopback IP literal (<see cref="Loopback"/>).</summary>
    public bool IsLoopback => Loopback.IsHost(Host);

    /// <summary>
    /// The addresses Kestrel should bind. <c>localhost</c> is spelt out as 127.0.0.1 and, where IPv6 has a loopback,
    /// [::1] (what Kestrel binds for it), so that the addresses it reports bound are the real ones; an IP literal is
    /// given in its usual form; another name as written (Kestrel binds every interface for it).
    /// </summary>
    public IReadOnlyList<string> BindUrls => Host == "localhost"
        ? IPv6LoopbackUsable()
            ? [Url("127.0.0.1"), Url("[::1]")]
            : [Url("127.0.0.1")]
        : IPAddress.TryParse(Host.Trim('[', ']'), out var ip)
            ? [Url(ip.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{ip}]" : ip.ToString())]
            : [Url(Host)];

    /// <summary>
    /// The URL given as <paramref name="flag"/>: http:// or https://, a host, an explicit port, and no path other than
    /// <c>/</c>, no query, fragment or user name. Throws <see cref="ArgumentException"/> naming the flag and saying
    /// what is wrong.
    /// </summary>
    public static ListenUrl Parse(string url, string flag)
    {
        ArgumentNullException.ThrowIfNull(url);
        string refused = $"{flag} '{url}'";
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri)
            || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new ArgumentException($"{refused} is not an http:// or https:// URL (http://HOST:PORT)");
        }

        if (uri.UserInfo.Length > 0)
        {
            throw new ArgumentException($"{refused}: a listen address takes no user name or password");
        }

        var (host, port) = Authority(url);
        if (host.Length == 0)
        {
            throw new ArgumentException($"{refused} names no host (http://HOST:PORT)");
        }

        if (port is null)
        {
            throw new ArgumentException($"{refused} names no port (http://HOST:PORT; port 0 picks a free one)");
        }

        if (uri.AbsolutePath != "/")
        {
            throw new ArgumentException($"{refused}: a listen address takes no path (got '{uri.AbsolutePath}')");
        }

        if (uri.Query.Length > 0 || uri.Fragment.Length > 0)
        {
            throw new ArgumentException(
                $"{refused}: a listen address takes no {(uri.Query.Length > 0 ? "query" : "fragment")}");
        }

        if (host == "localhost" && uri.Port == 0)
        {
            throw new ArgumentException(
                $"{refused}: port 0 (a free port) cannot be picked for localhost, which is two addresses; " +
                $"use {uri.Scheme}://127.0.0.1:0 (or [::1]:0)");
        }

        return new ListenUrl(uri.Scheme, host, uri.Port);
    }

    /// <summary>Null when <paramref name="url"/> is a listen address <see cref="Parse"/> takes, else why not.</summary>
    public static string? Problem(string url, string flag)
    {
        try
        {
            _ = Parse(url, flag);
            return null;
        }
        catch (ArgumentException ex)
        {
            return ex.Message;
        }
    }

    /// <summary>
    /// The host (lower case) and the port as written in <paramref name="url"/>'s authority, between <c>//</c> and the
    /// path; the port null when there is none (<see cref="System.Uri"/> fills in 80 or 443, which Kestrel would bind).
    /// </summary>
    public static (string Host, string? Port) Authority(string url)
    {
        ArgumentNullException.ThrowIfNull(url);
        int scheme = url.IndexOf("//", StringComparison.Ordinal);
        string rest = scheme < 0 ? url : url[(scheme + 2)..];
        int end = rest.IndexOfAny(['/', '?', '#']);
        string authority = end < 0 ? rest : rest[..end];
        authority = authority[(authority.LastIndexOf('@') + 1)..];
        int colon = authority.LastIndexOf(':');
        if (colon <= authority.LastIndexOf(']'))
        {
            return (authority.ToLowerInvariant(), null);
        }

        string port = authority[(colon + 1)..];
        return (authority[..colon].ToLowerInvariant(), port.Length > 0 ? port : null);
    }

    public override string ToString() => Url(Host);

    private string Url(string host) => $"{Scheme}://{host}:{Port}";

    /// <summary>Whether a socket can bind [::1] here (IPv6 can be off, or lack a loopback address).</summary>
    internal static bool IPv6LoopbackUsable()
    {
        if (!Socket.OSSupportsIPv6)
        {
            return false;
        }

        try
        {
            using var socket = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
