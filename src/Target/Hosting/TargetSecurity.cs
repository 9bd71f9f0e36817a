using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Grpc.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Migration.Shared.Hosting;
using Migration.Shared.Protocol;
using Migration.Target.Services;

namespace Migration.Target.Hosting;

/// <summary>
/// Who may talk to the target. On loopback anything goes (a local test bench); beyond it the target insists on TLS and
/// on credentials: mutual TLS with client certificates from a given CA, or a shared token, or both. Whatever the
/// transport, a migration's own calls also need the key its Begin handed out (<c>MigrationOwner</c>).
/// </summary>
internal static class TargetSecurity
{
    /// <summary>A token shorter than this is too easy to guess.</summary>
    public const int MinTokenLength = 16;

    /// <summary>Null when <paramref name="options"/> may be served as they are, else the usage error that says why not.</summary>
    public static string? Problem(TargetOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var uri = new Uri(options.Listen);
        bool https = uri.Scheme == Uri.UriSchemeHttps;
        if (https && (options.TlsCertificatePath is null || options.TlsKeyPath is null))
        {
            return "--listen https:// needs --tls-cert and --tls-key (the server's certificate and key, PEM)";
        }

        if (!https && (options.TlsCertificatePath is not null || options.TlsClientCaPath is not null))
        {
            return "--tls-cert and --tls-client-ca need an https:// --listen URL";
        }

        if (options.Token is { Length: < MinTokenLength })
        {
            return $"the token must have at least {MinTokenLength} characters";
        }

        if (Loopback.Is(uri))
        {
            return null;
        }

        if (!https)
        {
            return $"refusing to listen on {uri.Host} without TLS: beyond loopback use https:// with --tls-cert and " +
                "--tls-key, and --tls-client-ca (mutual TLS) or --token-file";
        }

        return options.TlsClientCaPath is null && options.Token is null
            ? $"refusing to listen on {uri.Host} without credentials: give --tls-client-ca (mutual TLS) or --token-file"
            : null;
    }

    /// <summary>
    /// TLS for Kestrel: the server certificate, and with a client CA the request for client certificates. The
    /// handshake takes any certificate; <see cref="RequireClientCertificate"/> then checks it against the CA before any
    /// endpoint runs, so a refused caller hears why (with TLS 1.3 a handshake refusal reaches the client only as a
    /// connection that closed).
    /// </summary>
    public static void ConfigureHttps(HttpsConnectionAdapterOptions https, TargetOptions options)
    {
        ArgumentNullException.ThrowIfNull(https);
        ArgumentNullException.ThrowIfNull(options);
        if (options.TlsCertificatePath is null || options.TlsKeyPath is null)
        {
            return; // plain http://; Problem() refuses https:// without both
        }

        https.ServerCertificate = LoadCertificate(options.TlsCertificatePath, options.TlsKeyPath);
        if (options.TlsClientCaPath is not null)
        {
            https.ClientCertificateMode = ClientCertificateMode.AllowCertificate;
            https.ClientCertificateValidation = static (_, _, _) => true; // judged per call, below
        }
    }

    /// <summary>
    /// Mutual TLS: a call on a connection without a client certificate, or with one that does not chain to
    /// <paramref name="caPath"/>'s CA, ends Unauthenticated (health probes excepted, as for the token).
    /// </summary>
    public static Func<RequestDelegate, RequestDelegate> RequireClientCertificate(string caPath)
    {
        var ca = X509Certificate2.CreateFromPem(File.ReadAllText(caPath));
        return next => context =>
        {
            if (IsHealthProbe(context))
            {
                return next(context);
            }

            return context.Connection.ClientCertificate switch
            {
                null => Refuse(context, "this target needs a client certificate issued by its CA (mutual TLS)"),
                var presented when !IssuedBy(presented, ca) => Refuse(context,
                    $"the client certificate '{presented.Subject}' was not issued by this target's CA"),
                _ => next(context),
            };
        };
    }

    /// <summary>
    /// The token check, before any endpoint: a call without <c>authorization: Bearer TOKEN</c> ends Unauthenticated.
    /// The health service stays open, so a probe can tell the target is up without holding the secret.
    /// </summary>
    public static RequestDelegate RequireToken(RequestDelegate next, string token)
    {
        byte[] expected = Encoding.UTF8.GetBytes("Bearer " + token);
        return context =>
        {
            if (IsHealthProbe(context))
            {
                return next(context);
            }

            string header = context.Request.Headers[WireNames.AuthorizationHeader].ToString();
            byte[] presented = Encoding.UTF8.GetBytes(header);
            return CryptographicOperations.FixedTimeEquals(presented, expected)
                ? next(context)
                : Refuse(context, "this target needs its token (authorization: Bearer TOKEN)");
        };
    }

    private static bool IsHealthProbe(HttpContext context) =>
        context.Request.Path.StartsWithSegments("/grpc.health.v1.Health", StringComparison.Ordinal);

    private static Task Refuse(HttpContext context, string detail)
    {
        context.Response.ContentType = GrpcStatusWriter.ContentType;
        GrpcStatusWriter.Finish(context.Response, new Status(StatusCode.Unauthenticated, detail));
        return Task.CompletedTask;
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
}
