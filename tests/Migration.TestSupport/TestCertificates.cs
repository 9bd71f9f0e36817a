using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Migration.TestSupport;

/// <summary>
/// A throwaway PKI in a temporary directory, made with .NET's own APIs: a CA, a server certificate for 127.0.0.1
/// and a client certificate it issued, and a second CA with a client certificate of its own (a stranger). Each file
/// is PEM, as the target and <c>migrate</c> take them. Deleted on dispose.
/// </summary>
public sealed class TestCertificates : IDisposable
{
    private TestCertificates(string directory) => Directory = directory;

    public string Directory { get; }

    public string CaPath => Path.Combine(Directory, "ca.pem");

    public string ServerCertificatePath => Path.Combine(Directory, "server.pem");

    public string ServerKeyPath => Path.Combine(Directory, "server-key.pem");

    public string ClientCertificatePath => Path.Combine(Directory, "client.pem");

    public string ClientKeyPath => Path.Combine(Directory, "client-key.pem");

    public string StrangerCertificatePath => Path.Combine(Directory, "stranger.pem");

    public string StrangerKeyPath => Path.Combine(Directory, "stranger-key.pem");

    public static TestCertificates Create()
    {
        string directory = Path.Combine(Path.GetTempPath(), "migration-pki-" + Guid.NewGuid().ToString("N")[..8]);
        System.IO.Directory.CreateDirectory(directory);
        var pki = new TestCertificates(directory);
        using var ca = Authority("CN=migration test CA");
        using var otherCa = Authority("CN=someone else's CA");
        File.WriteAllText(pki.CaPath, ca.ExportCertificatePem());
        Issue(ca, "CN=127.0.0.1", server: true, pki.ServerCertificatePath, pki.ServerKeyPath);
        Issue(ca, "CN=migration source", server: false, pki.ClientCertificatePath, pki.ClientKeyPath);
        Issue(otherCa, "CN=stranger", server: false, pki.StrangerCertificatePath, pki.StrangerKeyPath);
        return pki;
    }

    public void Dispose() => System.IO.Directory.Delete(Directory, recursive: true);

    private static X509Certificate2 Authority(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(name, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(
            X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        var now = DateTimeOffset.UtcNow;
        return request.CreateSelfSigned(now.AddMinutes(-10), now.AddDays(2)); // outlives what it issues
    }

    private static void Issue(X509Certificate2 ca, string name, bool server, string certificatePath, string keyPath)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(name, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [server ? new Oid("1.3.6.1.5.5.7.3.1") : new Oid("1.3.6.1.5.5.7.3.2")], false));
        if (server)
        {
            var names = new SubjectAlternativeNameBuilder();
            names.AddIpAddress(IPAddress.Loopback);
            names.AddDnsName("localhost");
            request.CertificateExtensions.Add(names.Build());
        }

        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        var now = DateTimeOffset.UtcNow;
        byte[] serial = RandomNumberGenerator.GetBytes(12);
        using var issued = request.Create(ca, now.AddMinutes(-5), now.AddDays(1), serial);
        File.WriteAllText(certificatePath, issued.ExportCertificatePem());
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem());
    }
}
