using Grpc.Core;
using Migration.Protocol;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Shared.Transport;
using Migration.Shared.Transport.Http2;
using Migration.Source.Cli;
using Migration.TestSupport;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Who may talk to a target: mutual TLS with certificates made here, and the shared token. An authenticated source
/// migrates and verifies; a caller without the client certificate, with a certificate from another CA, or without the
/// token is refused (Unauthenticated, saying why) before any handler runs; a target the source's CA did not certify
/// is never talked to.
/// </summary>
public sealed class SecurityTests : IDisposable
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);
    private readonly TestCertificates _pki = TestCertificates.Create();

    public void Dispose() => _pki.Dispose();

    private Task<TargetProcess> MutualTlsTargetAsync() => TargetProcess.StartAsync(
    [
        "--listen", "https://127.0.0.1:0", "--tls-cert", _pki.ServerCertificatePath, "--tls-key", _pki.ServerKeyPath,
        "--tls-client-ca", _pki.CaPath,
    ], Limit);

    private TransportSecurity Client(bool certificate = true, bool stranger = false) => new()
    {
        CaPath = _pki.CaPath,
        ClientCertificatePath = !certificate ? null
            : stranger ? _pki.StrangerCertificatePath : _pki.ClientCertificatePath,
        ClientKeyPath = !certificate ? null : stranger ? _pki.StrangerKeyPath : _pki.ClientKeyPath,
    };

    [Fact]
    public async Task MutualTls_TheSourceWithItsCertificate_MigratesAndVerifies()
    {
        await using var target = await MutualTlsTargetAsync();
        Assert.Equal("https", target.Address.Scheme);
        var report = await MigrateAsync(target.Address, Client());
        Assert.True(report is { Status: MigrationStatus.Completed, Verified: true }, report.Error);
    }

    /// <summary>
    /// A client that skips TLS and marks its connection as carrying page streams (which a cleartext target serves off
    /// the transport, past Kestrel's HTTP/2) gets nothing from a TLS target: the handshake fails on its first bytes.
    /// </summary>
    [Fact]
    public async Task MutualTls_APageStreamConnectionInClear_IsNotServed()
    {
        await using var target = await MutualTlsTargetAsync();
        var inClear = new UriBuilder(target.Address) { Scheme = Uri.UriSchemeHttp }.Uri;
        var refused = await Assert.ThrowsAsync<RpcException>(() => PageStreamConnection.ConnectAsync(inClear,
            TransportSecurity.None, TimeSpan.FromSeconds(10), CancellationToken.None));
        Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
    }

    [Fact]
    public async Task MutualTls_WithoutAClientCertificate_IsUnauthenticated()
    {
        await using var target = await MutualTlsTargetAsync();
        var refused = await Assert.ThrowsAsync<RpcException>(() => StatusAsync(target.Address, Client(false)));
        Assert.Equal(StatusCode.Unauthenticated, refused.StatusCode);
        Assert.Contains("client certificate", refused.Status.Detail, StringComparison.Ordinal);

        // The engine reports it as a failed migration with the reason, and the guest runs on.
        var report = await MigrateAsync(target.Address, Client(false));
        Assert.Equal(MigrationStatus.Failed, report.Status);
        Assert.Contains("client certificate", report.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task MutualTls_ACertificateFromAnotherCa_IsUnauthenticated()
    {
        await using var target = await MutualTlsTargetAsync();
        var refused = await Assert.ThrowsAsync<RpcException>(
            () => StatusAsync(target.Address, Client(stranger: true)));
        Assert.Equal(StatusCode.Unauthenticated, refused.StatusCode);
        Assert.Contains("'CN=stranger' was not issued by this target's CA", refused.Status.Detail,
            StringComparison.Ordinal);
    }

    [Fact]
    public async Task MutualTls_ATargetCertificateFromAnotherCa_IsNotTrusted()
    {
        await using var target = await MutualTlsTargetAsync();
        var wrongCa = Client() with { CaPath = _pki.StrangerCertificatePath }; // a leaf, not the target's CA
        var refused = await Assert.ThrowsAsync<RpcException>(() => StatusAsync(target.Address, wrongCa));
        Assert.Contains("SSL connection could not be established", refused.Status.Detail, StringComparison.Ordinal);
        var report = await MigrateAsync(target.Address, wrongCa);
        Assert.Equal(MigrationStatus.Failed, report.Status);
        Assert.Contains("TLS handshake with the target failed", report.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Token_TheSourceWithIt_Migrates_OthersAreUnauthenticated()
    {
        string tokenFile = Path.Combine(_pki.Directory, "token");
        const string Token = "s3cret-token-for-this-test-only";
        await File.WriteAllTextAsync(tokenFile, Token + "\n");
        await using var target = await TargetProcess.StartAsync(["--token-file", tokenFile], Limit);

        foreach (string? presented in new[] { null, "wrong-token-of-some-length", Token + "x" })
        {
            var refused = await Assert.ThrowsAsync<RpcException>(
                () => StatusAsync(target.Address, new TransportSecurity { Token = presented }));
            Assert.Equal(StatusCode.Unauthenticated, refused.StatusCode);
        }

        // Through the command line, as a user would: --token-file on both sides.
        await using var source = ChildProgram.Source(
        [
            "migrate", "--target", target.Address.ToString(), "--ram", "16MiB", "--warmup-seconds", "0",
            "--token-file", tokenFile,
        ]);
        Assert.Equal(CommandLine.Completed, await source.WaitForExitAsync(Limit));
    }

    private static async Task<StatusReply> StatusAsync(Uri target, TransportSecurity security)
    {
        using var channel = ControlChannel.Create(target, security);
        var headers = new Metadata();
        if (security.Token is string token)
        {
            headers.Add("authorization", "Bearer " + token);
        }

        return await new Protocol.Migration.MigrationClient(channel)
            .StatusAsync(new StatusRequest(), headers, DateTime.UtcNow.AddSeconds(10));
    }

    private static async Task<MigrationReport> MigrateAsync(Uri target, TransportSecurity security)
    {
        using var vm = VirtualMachine.Boot(new GuestConfig { RamBytes = 16L << 20, Vcpus = 1 });
        vm.Start();
        var options = MigrationOptions.Defaults with { Target = target, Security = security };
        var report = await new PrecopyEngine(vm, options).MigrateAsync().WaitAsync(Limit);
        Assert.Equal(report.Status == MigrationStatus.Completed ? VmRunState.Paused : VmRunState.Running, vm.State);
        return report;
    }
}
