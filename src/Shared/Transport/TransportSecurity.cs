using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace Migration.Shared.Transport;

/// <summary>
/// How the source proves itself to the target and trusts it: a shared token sent on every call, and for https:// the
/// CA the target's certificate must chain to and the client certificate for mutual TLS.
/// </summary>
public sealed record TransportSecurity
{
    public static readonly TransportSecurity None = new();

    /// <summary>Sent as <c>authorization: Bearer TOKEN</c> on every call.</summary>
    public string? Token { get; init; }

    /// <summary>The CA (PEM) the target's certificate must chain to; null: the machine's trust store.</summary>
    public string? CaPath { get; init; }

    /// <summary>The client certificate and key (PEM) for mutual TLS.</summary>
    public string? ClientCertificatePath { get; init; }

    public string? ClientKeyPath { get; init; }

    /// <summary>
    /// How the process's flags for these settings begin ("--", or "--onward-" on a target), for the messages that
    /// name them.
    /// </summary>
    public string FlagPrefix { get; init; } = "--";

    /// <summary>
    /// The targets a migration the management API starts may go to (the operator's <c>--allow-target</c>, compared
    /// by scheme, host and port). With a token or a client certificate to present, no other; without, a list given
    /// still restricts.
    /// </summary>
    public IReadOnlyList<Uri> AllowedTargets { get; init; } = [];

    /// <summary>Something to prove with: a token or a client certificate.</summary>
    public bool HasCredentials => Token is not null || ClientCertificatePath is not null;

    /// <summary>
    /// Why the token may not go to <paramref name="target"/>: it would cross beyond this machine in clear (http://).
    /// Null when it may. <paramref name="field"/> is what the caller calls the target (<c>--target</c>,
    /// <c>target</c>).
    /// </summary>
    public string? CleartextProblem(Uri target, string field)
    {
        ArgumentNullException.ThrowIfNull(target);
        return Token is not null && target.Scheme == Uri.UriSchemeHttp && !StaysOnThisMachine(target)
            ? $"{field} '{target}' is http:// beyond loopback: this process would send its token " +
                $"({FlagPrefix}token-file) there in clear; use https://"
            : null;
    }

    /// <summary>
    /// Why a migration the management API asked for may not go to <paramref name="target"/> (called
    /// <paramref name="field"/>), or null: the token in clear beyond loopback, or a target the operator did not
    /// list while there is a list or something to prove with. Nothing has connected anywhere when this answers.
    /// </summary>
    public string? RequestedTargetProblem(Uri target, string field)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (CleartextProblem(target, field) is { } cleartext)
        {
            return cleartext;
        }

        if ((AllowedTargets.Count == 0 && !HasCredentials)
            || AllowedTargets.Any(allowed => SameEndpoint(allowed, target)))
        {
            return null;
        }

        string what = (Token, ClientCertificatePath) switch
        {
            (not null, not null) => $"its token ({FlagPrefix}token-file) and client certificate " +
                $"({FlagPrefix}tls-client-cert)",
            (not null, null) => $"its token ({FlagPrefix}token-file)",
            (null, not null) => $"its client certificate ({FlagPrefix}tls-client-cert)",
            _ => "nothing",
        };
        return AllowedTargets.Count == 0
            ? $"{field} '{target}' is not a target this process may migrate to: it presents {what} only to targets " +
                $"its operator allowed with {FlagPrefix}allow-target, and none was given"
            : $"{field} '{target}' is not a target this process may migrate to: it migrates only to those its " +
                $"operator allowed with {FlagPrefix}allow-target " +
                $"({string.Join(", ", AllowedTargets.Select(Endpoint))})";
    }

    /// <summary>A URL as the allow-list compares it: scheme, host and port (the default port made explicit).</summary>
    public static string Endpoint(Uri uri)
    {
        ArgumentNullException.ThrowIfNull(uri);
        return $"{uri.Scheme}://{uri.Host}:{uri.Port}".ToLowerInvariant();
    }

    private static bool SameEndpoint(Uri a, Uri b) => string.Equals(Endpoint(a), Endpoint(b), StringComparison.Ordinal);

    /// <summary>
    /// Exactly <c>localhost</c>, or a loopback IP literal (127.0.0.0/8, ::1), judged from the URL as written: the rule
    /// the listening checks use too (<see cref="Hosting.Loopback.IsHost"/>), not <see cref="Uri.IsLoopback"/>, which
    /// also takes the name "loopback".
    /// </summary>
    internal static bool StaysOnThisMachine(Uri uri)
    {
        ArgumentNullException.ThrowIfNull(uri);
        // the host as written (Uri reads the name "loopback" as "localhost"): the one loopback rule of both programs
        return Hosting.Loopback.IsHost(Hosting.ListenUrl.Authority(uri.OriginalString).Host);
    }

    /// <summary>TLS settings for one connection to the target.</summary>
    internal SslClientAuthenticationOptions ClientTls()
    {
        var tls = new SslClientAuthenticationOptions();
        if (CaPath is string caPath)
        {
            var ca = X509Certificate2.CreateFromPem(File.ReadAllText(caPath));
            tls.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                certificate is X509Certificate2 presented
                && (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) == SslPolicyErrors.None
                && ChainsTo(presented, ca);
        }

        if (ClientCertificatePath is string certificatePath && ClientKeyPath is string keyPath)
        {
            using var pem = X509Certificate2.CreateFromPemFile(certificatePath, keyPath);
            tls.ClientCertificates = [X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null)];
        }

        return tls;
    }

    private static bool ChainsTo(X509Certificate2 certificate, X509Certificate2 ca)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return chain.Build(certificate);
    }
}
