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
