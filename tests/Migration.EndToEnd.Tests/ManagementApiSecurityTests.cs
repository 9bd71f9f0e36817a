using Migration.Source.Cli;
using Migration.TestSupport;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// A running VM's management API behind mutual TLS and a token, as a target is: `ctl` with the CA, its client
/// certificate and the token drives it; without them it is refused, saying why. Beyond loopback `run` insists on TLS
/// and credentials.
/// </summary>
public sealed class ManagementApiSecurityTests : IDisposable
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);
    private readonly TestCertificates _pki = TestCertificates.Create();
    private readonly string _token = Path.Combine(Path.GetTempPath(), $"api-token-{Guid.NewGuid():N}");

    public ManagementApiSecurityTests() => File.WriteAllText(_token, "an-api-token-of-some-length\n");

    public void Dispose()
    {
        _pki.Dispose();
        File.Delete(_token);
    }

    [Fact]
    public async Task MutualTlsAndToken_CtlWithThem_DrivesTheVm_OthersAreUnauthenticated()
    {
        await using var source = ChildProgram.Source(
        [
            "run", "--listen", "https://127.0.0.1:0", "--ram", "32MiB", "--vcpus", "1",
            "--api-tls-cert", _pki.ServerCertificatePath, "--api-tls-key", _pki.ServerKeyPath,
            "--api-tls-client-ca", _pki.CaPath, "--api-token-file", _token,
        ]);
        await source.WaitForLineAsync("management API listening on", Limit);
        string api = ManagementCalls.ApiAddress(source).ToString();
        Assert.StartsWith("https://", api, StringComparison.Ordinal);
        string[] client = ["--tls-ca", _pki.CaPath, "--tls-client-cert", _pki.ClientCertificatePath,
            "--tls-client-key", _pki.ClientKeyPath];

        await using (var ctl = ChildProgram.Source(["ctl", "--api", api, .. client, "--token-file", _token,
            "query-vm"]))
        {
            Assert.Equal(CommandLine.Completed, await ctl.WaitForExitAsync(Limit));
            Assert.True(ctl.Printed("\"role\": \"source\""), string.Join('\n', ctl.Output));
        }

        await AssertRefusedAsync([.. client], "needs its token");
        await AssertRefusedAsync(["--tls-ca", _pki.CaPath, "--token-file", _token], "client certificate");
        await AssertRefusedAsync(["--tls-ca", _pki.CaPath, "--tls-client-cert", _pki.StrangerCertificatePath,
            "--tls-client-key", _pki.StrangerKeyPath, "--token-file", _token], "was not issued by");

        async Task AssertRefusedAsync(string[] credentials, string why)
        {
            await using var ctl = ChildProgram.Source(["ctl", "--api", api, .. credentials, "query-vm"]);
            Assert.NotEqual(CommandLine.Completed, await ctl.WaitForExitAsync(Limit));
            string all = string.Join('\n', ctl.Output);
            Assert.True(ctl.Printed("Unauthenticated") && ctl.Printed(why), all);
        }
    }

    [Theory]
    [InlineData("http://0.0.0.0:0", false, "without TLS")]
    [InlineData("https://0.0.0.0:0", false, "without credentials: give --api-tls-client-ca")]
    [InlineData("https://127.0.0.1:0", false, "needs --api-tls-cert and --api-tls-key")]
    [InlineData("http://127.0.0.1:0", true, "need an https:// listen address")]
    public async Task Run_BeyondLoopback_InsistsOnTlsAndCredentials(string listen, bool certificate, string why)
    {
        string[] tls = listen.StartsWith("https://0", StringComparison.Ordinal) || certificate
            ? ["--api-tls-cert", _pki.ServerCertificatePath, "--api-tls-key", _pki.ServerKeyPath]
            : [];
        await using var source = ChildProgram.Source(["run", "--listen", listen, "--ram", "32MiB", .. tls]);
        Assert.Equal(2, await source.WaitForExitAsync(Limit)); // a usage error
        Assert.True(source.Printed(why), string.Join('\n', source.Output));
    }
}
