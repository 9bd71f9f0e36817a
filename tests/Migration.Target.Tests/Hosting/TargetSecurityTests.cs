using Grpc.Core;
using Migration.Protocol;
using Migration.Shared.Hosting;
using Migration.TestSupport;

namespace Migration.Target.Tests.Hosting;

/// <summary>Which listen setups the target accepts, and the typed rejection of undecodable control requests.</summary>
public sealed class TargetSecurityTests
{
    private static readonly string Token = new('t', ServerSecurity.MinTokenLength);

    [Theory]
    [InlineData("http://127.0.0.1:0")]
    [InlineData("http://[::1]:0")]
    [InlineData("http://localhost:50051")]
    [InlineData("http://127.3.4.5:0")]
    public void Loopback_NeedsNothing(string listen) =>
        Assert.Null((TargetOptions.Defaults with { Listen = listen }).Security.Problem());

    [Theory]
    [InlineData("http://0.0.0.0:0", null, false, "without TLS")]
    [InlineData("http://10.1.2.3:50051", "token", false, "without TLS")] // a token in cleartext is no secret
    [InlineData("http://loopback:50051", null, false, "without TLS")] // Kestrel binds every interface for it
    [InlineData("http://localhost.:50051", null, false, "without TLS")]
    [InlineData("https://0.0.0.0:0", null, false, "without credentials")]
    [InlineData("https://0.0.0.0:0", null, true, null)]
    [InlineData("https://0.0.0.0:0", "token", false, null)]
    public void BeyondLoopback_NeedsTlsAndCredentials(string listen, string? token, bool clientCa, string? problem)
    {
        var options = TargetOptions.Defaults with
        {
            Listen = listen,
            Token = token is null ? null : Token,
            TlsCertificatePath = listen.StartsWith("https", StringComparison.Ordinal) ? "server.pem" : null,
            TlsKeyPath = listen.StartsWith("https", StringComparison.Ordinal) ? "server-key.pem" : null,
            TlsClientCaPath = clientCa ? "ca.pem" : null,
        };
        string? found = options.Security.Problem();
        if (problem is null)
        {
            Assert.Null(found);
        }
        else
        {
            Assert.Contains(problem, found, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData("http://localhost:0", "http://127.0.0.1:0")]
    [InlineData("http://127.0.0.1:0/base", "no path")]
    [InlineData("http://127.0.0.1", "no port")]
    public void AListenUrlKestrelCannotBindAsWritten_IsRefused(string listen, string problem) =>
        Assert.Contains(problem, (TargetOptions.Defaults with { Listen = listen }).Security.Problem(),
            StringComparison.Ordinal);

    [Fact]
    public void Localhost_IsBoundAsItsLoopbackAddresses() =>
        Assert.Equal("http://127.0.0.1:50051",
            ListenUrl.Parse("http://LOCALHOST:50051", "--listen").BindUrls[0]);

    /// <summary>
    /// After start: settings safe only on loopback must have bound nothing else (a name Kestrel did not know binds
    /// every interface, shown as [::]); TLS with credentials may bind anything.
    /// </summary>
    [Theory]
    [InlineData("http://127.0.0.1:0", new[] { "http://127.0.0.1:41000" }, null)]
    [InlineData("http://localhost:41000", new[] { "http://127.0.0.1:41000", "http://[::1]:41000" }, null)]
    [InlineData("http://127.0.0.1:0", new[] { "http://[::]:41000" }, "bound http://[::]:41000, beyond loopback")]
    [InlineData("http://127.0.0.1:0", new[] { "http://127.0.0.1:41000", "http://0.0.0.0:41000" }, "no TLS")]
    [InlineData("https://127.0.0.1:0", new[] { "https://[::]:41000" }, "no credentials")]
    public void BoundBeyondLoopback_WithLoopbackOnlySettings_IsAProblem(string listen, string[] bound,
        string? problem)
    {
        var options = TargetOptions.Defaults with
        {
            Listen = listen,
            TlsCertificatePath = listen.StartsWith("https", StringComparison.Ordinal) ? "server.pem" : null,
            TlsKeyPath = listen.StartsWith("https", StringComparison.Ordinal) ? "server-key.pem" : null,
        };
        string? found = options.Security.BoundProblem(bound);
        if (problem is null)
        {
            Assert.Null(found);
        }
        else
        {
            Assert.Contains(problem, found, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void BoundAnywhere_WithTlsAndCredentials_IsNoProblem()
    {
        var options = TargetOptions.Defaults with
        {
            Listen = "https://0.0.0.0:0",
            TlsCertificatePath = "server.pem",
            TlsKeyPath = "server-key.pem",
            TlsClientCaPath = "ca.pem",
        };
        Assert.Null(options.Security.BoundProblem(["https://0.0.0.0:41000"]));
    }

    [Fact]
    public void AShortToken_IsRefused() =>
        Assert.Contains("at least", (TargetOptions.Defaults with { Token = "short" }).Security.Problem(),
            StringComparison.Ordinal);

    [Fact]
    public void HttpsWithoutItsCertificate_IsRefused()
    {
        var options = TargetOptions.Defaults with { Listen = "https://127.0.0.1:0" };
        Assert.Contains("--tls-cert", options.Security.Problem(), StringComparison.Ordinal);
    }

    [Fact]
    public void IssuedBy_TakesTheCasOwnCertificates_AndNoOthers()
    {
        using var pki = TestCertificates.Create();
        using var ca = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(
            File.ReadAllText(pki.CaPath));
        using var client = ServerSecurity.LoadCertificate(pki.ClientCertificatePath, pki.ClientKeyPath);
        using var stranger = ServerSecurity.LoadCertificate(pki.StrangerCertificatePath, pki.StrangerKeyPath);
        Assert.True(ServerSecurity.IssuedBy(client, ca));
        Assert.False(ServerSecurity.IssuedBy(stranger, ca));
    }

    [Theory]
    [InlineData(new byte[] { 0x0a, 0x05, 0x61 })] // field 1, length 5, one byte present
    [InlineData(new byte[] { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 })] // a bad varint
    public void UndecodableRequests_AreInvalidArgumentNamingTheMessage(byte[] bytes)
    {
        var marshaller = TypedMarshaller.For(BeginRequest.Parser);
        var refused = Assert.Throws<RpcException>(() => marshaller.ContextualDeserializer(new Payload(bytes)));
        Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
        Assert.Contains(nameof(BeginRequest), refused.Status.Detail, StringComparison.Ordinal);
    }

    private sealed class Payload(byte[] bytes) : DeserializationContext
    {
        public override int PayloadLength => bytes.Length;

        public override System.Buffers.ReadOnlySequence<byte> PayloadAsReadOnlySequence() => new(bytes);
    }
}
