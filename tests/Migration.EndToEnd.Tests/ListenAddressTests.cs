using System.Net;
using System.Net.Sockets;
using Migration.Shared.Hosting;
using Migration.TestSupport;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// What the target and <c>run</c> listen on, held with real processes: a listen URL is checked before anything starts
/// (a usage error naming --listen, exit 2, no guest booted); loopback is a loopback IP literal or exactly
/// <c>localhost</c>, never a name Kestrel would bind on every interface; and the address printed is the one bound.
/// </summary>
public sealed class ListenAddressTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    /// <summary>A listen URL neither program may take, and a word its refusal must contain.</summary>
    public static TheoryData<string, string> Malformed => new()
    {
        { "http://localhost:0", "http://127.0.0.1:0" }, // Kestrel cannot pick a free port on localhost
        { "http://127.0.0.1:0/base", "path" },
        { "http://127.0.0.1", "port" },
        { "http://127.0.0.1:0/?q=1", "query" },
        { "http://127.0.0.1:0/#f", "fragment" },
        { "http://user@127.0.0.1:0", "user" },
        { "ftp://127.0.0.1:0", "http://" },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public async Task Target_AMalformedListenUrl_IsAUsageError(string listen, string why)
    {
        await using var target = ChildProgram.Target(["--listen", listen]);
        Assert.Equal(2, await target.WaitForExitAsync(Limit));
        Assert.True(target.Printed("--listen") && target.Printed(why), string.Join('\n', target.Output));
        Assert.False(target.Printed("listening on"), string.Join('\n', target.Output));
    }

    [Theory]
    [MemberData(nameof(Malformed))]
    public async Task Run_AMalformedListenUrl_IsAUsageError_BeforeTheGuestBoots(string listen, string why)
    {
        await using var source = ChildProgram.Source(["run", "--listen", listen, "--ram", "16MiB", "--vcpus", "1"]);
        Assert.Equal(2, await source.WaitForExitAsync(Limit));
        Assert.True(source.Printed("--listen") && source.Printed(why), string.Join('\n', source.Output));
        Assert.False(source.Printed("booting"), "a usage error booted a guest");
    }

    /// <summary>
    /// <c>loopback</c> is a loopback name to <see cref="Uri.IsLoopback"/> but not to Kestrel, which binds every
    /// interface for a name it does not know: in cleartext without credentials that is refused.
    /// </summary>
    [Theory]
    [InlineData("http://loopback:0")]
    [InlineData("http://localhost.:0")]
    public async Task Target_ANameThatIsNotLoopback_IsRefusedWithoutTls(string listen)
    {
        await using var target = ChildProgram.Target(["--listen", listen]);
        Assert.Equal(2, await target.WaitForExitAsync(Limit));
        Assert.True(target.Printed("refusing to listen"), string.Join('\n', target.Output));
    }

    [Theory]
    [InlineData("http://loopback:0")]
    [InlineData("http://localhost.:0")]
    public async Task Run_ANameThatIsNotLoopback_IsRefusedWithoutTls_BeforeTheGuestBoots(string listen)
    {
        await using var source = ChildProgram.Source(["run", "--listen", listen, "--ram", "16MiB", "--vcpus", "1"]);
        Assert.Equal(2, await source.WaitForExitAsync(Limit));
        Assert.True(source.Printed("refusing to listen"), string.Join('\n', source.Output));
        Assert.False(source.Printed("booting"), "a refused listen address booted a guest");
    }

    [Fact]
    public async Task Target_OnLocalhost_PrintsTheLoopbackAddressesItBound()
    {
        int port = FreeLoopbackPort();
        await using var target = ChildProgram.Target(["--listen", $"http://localhost:{port}"]);
        await target.WaitForLineAsync("target listening on", Limit);
        Assert.Contains($"target listening on {Bound(port)}", target.Output);
    }

    [Fact]
    public async Task Run_OnLocalhost_PrintsTheLoopbackAddressesItBound()
    {
        int port = FreeLoopbackPort();
        await using var source = ChildProgram.Source(
            ["run", "--listen", $"http://localhost:{port}", "--ram", "16MiB", "--vcpus", "1"]);
        await source.WaitForLineAsync("management API listening on", Limit);
        Assert.Contains($"source: management API listening on {Bound(port)}", source.Output);
    }

    /// <summary>What binding localhost:<paramref name="port"/> binds: 127.0.0.1, and [::1] where IPv6 has it.</summary>
    private static string Bound(int port) =>
        $"http://127.0.0.1:{port}" + (ListenUrl.IPv6LoopbackUsable() ? $" http://[::1]:{port}" : string.Empty);

    private static int FreeLoopbackPort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}
