using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Migration.Shared.Protocol;

namespace Migration.Shared.Hosting;

/// <summary>
/// Who may call one of our servers (a target; a running VM's management API). On loopback anything goes (a local test
/// bench); beyond it the server insists on TLS and on credentials: mutual TLS with client certificates from a given
/// CA, or a shared token, or both. A target's migration calls also need the key their Begin handed out.
/// </summary>
public sealed record ServerSecurity
{
    /// <summary>A token shorter than this is too easy to guess.</summary>
    public const int MinTokenLength = 16;

    /// <summary>The URL the server listens on.</summary>
    public required string Listen { get; init; }

    /// <summary>A shared secret every caller must present (<c>authorization: Bearer TOKEN</c>); null: none required.</summary>
    public string? Token { get; init; }

    /// <summary>The server certificate and its key (PEM) for <c>https://</c>.</summary>
    public string? TlsCertificatePath { get; init; }

    public string? TlsKeyPath { get; init; }

    /// <summary>With this CA (PEM), mutual TLS: every client must present a certificate issued by it.</summary>
    public string? TlsClientCaPath { get; init; }

    /// <summary>How the server names itself in a refusal: "this target", "this VM's API".</summary>
    public string Name { get; init; } = "this server";

    /// <summary>What its flags start with, for the usage errors: "--" (the target), "--api-" (a source's API).</summary>
    public string FlagPrefix { get; init; } = "--";

    /// <summary>Null when the settings may be served as they are, else the usage error that says why not.</summary>
    public string? Problem()
    {
        string cert = FlagPrefix + "tls-cert", key = FlagPrefix + "tls-key", clientCa = FlagPrefix + "tls-client-ca";
        if (ListenUrl.Problem(Listen, "--listen") is { } badUrl)
        {
            return badUrl;
        }

        var listen = ListenUrl.Parse(Listen, "--listen");
        bool https = listen.Scheme == Uri.UriSchemeHttps;
        if (https && (TlsCertificatePath is null || TlsKeyPath is null))
        {
            return $"an https:// listen address needs {cert} and {key} (the server's certificate and key, PEM)";
        }

        if (!https && (TlsCertificatePath is not null || TlsClientCaPath is not null))
        {
            return $"{cert} and {clientCa} need an https:// listen address";
        }

        if (Token is { Length: < MinTokenLength })
        {
            return $"the token must have at least {MinTokenLength} characters";
        }

        if (listen.IsLoopback || BeyondLoopbackProblem(listen.Host) is not { } problem)
        {
            return null;
        }

        return IPAddress.TryParse(listen.Host.Trim('[', ']'), out _)
            ? problem
            : $"{problem} ('{listen.Host}' is a host name: loopback is localhost, 127.0.0.0/8 or [::1], and for " +
                "another name every interface is bound)";
    }

    /// <summary>
    /// Null when the addresses the server bound suit these settings, else why not: settings safe only on loopback
    /// (cleartext, or no credentials) must have bound loopback addresses and nothing else. <see cref="Problem"/>
    /// judged the address as written; this judges what the server made of it, after it started.
    /// </summary>
    public string? BoundProblem(IEnumerable<string> bound)
    {
        ArgumentNullException.ThrowIfNull(bound);
        foreach (string address in bound)
        {
            bool loopback = Loopback.IsHost(ListenUrl.Authority(address).Host);
            if (!loopback && BeyondLoopbackProblem(address) is not null)
            {
                string settings = new Uri(Listen).Scheme == Uri.UriSchemeHttps ? "no credentials" : "no TLS";
                return $"{Name} bound {address}, beyond loopback, though its settings ({settings}) are safe only " +
                    "on loopback; stopped";
            }
        }

        return null;
    }

    /// <summary>What these settings lack to listen on <paramref name="host"/>, beyond loopback; null: nothing.</summary>
    private string? BeyondLoopbackProblem(string host)
    {
        string cert = FlagPrefix + "tls-cert", key = FlagPrefix + "tls-key", clientCa = FlagPrefix + "tls-client-ca";
        string token = FlagPrefix + "token-file";
        if (new Uri(Listen).Scheme != Uri.UriSchemeHttps)
        {
            return $"refusing to listen on {host} without TLS: beyond loopback use https:// with {cert} and " +
                $"{key}, and {clientCa} (mutual TLS) or {token}";
        }

        return TlsClientCaPath is null && Token is null
            ? $"refusing to listen on {host} without credentials: give {clientCa} (mutual TLS) or {token}"
            : null;
    }

    /// <summary>
    /// TLS for Kestrel: the server certificate, and with a client CA the request for client certificates. The
    /// handshake takes any certificate; the check in <see cref="Apply"/> then judges it against the CA before any
    /// endpoint runs, so a refused caller hears why (with TLS 1.3 a handshake refusal reaches the client only as a
    /// connection that closed).
    /// </summary>
    public void ConfigureHttps(HttpsConnectionAdapterOptions https)
    {
        ArgumentNullException.ThrowIfNull(https);
        if (TlsCertificatePath is null || TlsKeyPath is null)
        {
            return; // plain http://; Problem() refuses https:// without both
        }

        https.ServerCertificate = LoadCertificate(TlsCertificatePath, TlsKeyPath);
        if (TlsClientCaPath is not null)
        {
            https.ClientCertificateMode = ClientCertificateMode.AllowCertificate;
            https.ClientCertificateValidation = static (_, _, _) => true; // judged per call, in Apply
        }
    }

    /// <summary>The checks, before any endpoint: the client certificate (mutual TLS), then the token.</summary>
    public void Apply(IApplicationBuilder app)
    {
        ArgumentNullException.ThrowIfNull(app);
        if (TlsClientCaPath is string clientCa)
        {
            app.Use(RequireClientCertificate(clientCa));
        }

        if (Token is string token)
        {
            app.Use(next => RequireToken(next, token));
        }
    }

    /// <summary>A certificate and its key from PEM files, in a form TLS servers on every platform accept.</summary>
    public static X509Certificate2 LoadCertificate(string certificatePath, string keyPath)
    {
        using var pem = X509Certificate2.CreateFromPemFile(certificatePath, keyPath);
        return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>Whether <paramref name="certificate"/> chains to <paramref name="ca"/> and nothing else.</summary>
    public static bool IssuedBy(X509Certificate2 certificate, X509Certificate2 ca)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return chain.Build(certificate);
    }

    /// <summary>
    /// Mutual TLS: a call on a connection without a client certificate, or with one that does not chain to
    /// <paramref name="caPath"/>'s CA, ends Unauthenticated (health probes excepted, as for the token).
    /// </summary>
    private Func<RequestDelegate, RequestDelegate> RequireClientCertificate(string caPath)
    {
        var ca = X509Certificate2.CreateFromPem(File.ReadAllText(caPath));
        string name = Name;
        return next => context =>
        {
            if (IsHealthProbe(context))
            {
                return next(context);
            }

            return context.Connection.ClientCertificate switch
            {
                null => Refuse(context, $"{name} needs a client certificate issued by its CA (mutual TLS)"),
                var presented when !IssuedBy(presented, ca) => Refuse(context,
                    $"the client certificate '{presented.Subject}' was not issued by {name}'s CA"),
                _ => next(context),
            };
        };
    }

    /// <summary>
    /// The token check: a call without <c>authorization: Bearer TOKEN</c> ends Unauthenticated. The health service
    /// stays open, so a probe can tell the server is up without holding the secret.
    /// </summary>
    private RequestDelegate RequireToken(RequestDelegate next, string token)
    {
        byte[] expected = Encoding.UTF8.GetBytes("Bearer " + token);
        return context =>
        {
            if (IsHealthProbe(context))
            {
                return next(context);
            }

            string header = context.Request.Headers[WireNames.AuthorizationHeader].ToString();
            return TokenRefusal(header, expected) is { } refusal ? Refuse(context, refusal) : next(context);
        };
    }

    /// <summary>
    /// The token check for a call served outside ASP.NET Core (the target's own page-stream connections): null when
    /// no token is required or <paramref name="authorization"/> (the header's value as sent, empty when absent)
    /// carries it, else the refusal to end the call with, as <see cref="StatusCode.Unauthenticated"/>.
    /// </summary>
    public string? TokenRefusal(string authorization) =>
        Token is string token ? TokenRefusal(authorization, Encoding.UTF8.GetBytes("Bearer " + token)) : null;

    private string? TokenRefusal(string authorization, byte[] expected) =>
        CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(authorization), expected)
            ? null
            : $"{Name} needs its token (authorization: Bearer TOKEN)";

    private static bool IsHealthProbe(HttpContext context) =>
        context.Request.Path.StartsWithSegments("/grpc.health.v1.Health", StringComparison.Ordinal);

    private static Task Refuse(HttpContext context, string detail)
    {
        context.Response.ContentType = GrpcStatusWriter.ContentType;
        GrpcStatusWriter.Finish(context.Response, new Status(StatusCode.Unauthenticated, detail));
        return Task.CompletedTask;
    }
}
