using System.Text.Json;
using Migration.Source.Cli;
using Migration.TestSupport;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// The programs' contract with scripts, held with real processes: Ctrl+C and SIGTERM wind a migration down (Cancel
/// sent, summary and report written, exit 1, the target discards and takes the next one), the timeout bounds the whole
/// migration, and bad command lines exit 2 before anything boots.
/// </summary>
public sealed class CommandLineContractTests : IAsyncLifetime
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);
    private readonly string _directory =
        Path.Combine(Path.GetTempPath(), "migration-cli-" + Guid.NewGuid().ToString("N")[..8]);
    private TargetProcess _target = null!;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(_directory);
        _target = await TargetProcess.StartAsync([], Limit);
    }

    public async Task DisposeAsync()
    {
        await _target.DisposeAsync();
        Directory.Delete(_directory, recursive: true);
    }

    /// <summary>
    /// <paramref name="launcherIgnoresInterrupt"/>: the test host was started as a background job of a
    /// non-interactive shell, which ignores SIGINT, and children inherit that; Ctrl+C must reach them all the same.
    /// </summary>
    [Theory]
    [InlineData(PosixSignals.Interrupt, "SIGINT", false)]
    [InlineData(PosixSignals.Interrupt, "SIGINT", true)]
    [InlineData(PosixSignals.Terminate, "SIGTERM", false)]
    public async Task ASignalMidMigration_CancelsCleanly(int signal, string name, bool launcherIgnoresInterrupt)
    {
        string report = Path.Combine(_directory, $"{name}-{launcherIgnoresInterrupt}.json");
        await using var source = ChildProgram.Source(
        [
            // 58 MiB of random data at 8 MB/s: round 0 alone takes seven seconds, so the signal lands inside it
            "migrate", "--target", _target.Address.ToString(), "--ram", "64MiB", "--vcpus", "1",
            "--max-bandwidth", "8MB/s", "--warmup-seconds", "0", "--report", report,
            "--workload", "memhog", "--memhog-share", "0.9", "--hints", "off",
        ], launcherIgnoresInterrupt);
        await _target.WaitForStateAsync(Limit, "receiving");
        await Task.Delay(300); // pages are flowing
        PosixSignals.Send(source.ProcessId, signal);

        Assert.Equal(CommandLine.Failed, await source.WaitForExitAsync(Limit));
        Assert.True(source.Printed("stopping"), string.Join('\n', source.Output));
        Assert.True(source.Printed("the guest keeps running here"), string.Join('\n', source.Output));
        using var json = JsonDocument.Parse(await File.ReadAllTextAsync(report));
        Assert.Equal("cancelled", json.RootElement.GetProperty("status").GetString());

        // The target heard the Cancel (not a lease running out): discarded at once, and free for the next.
        Assert.Equal("failed", await _target.WaitForStateAsync(Limit, "failed"));
        Assert.True(_target.Output.Any(l => l.Contains("cancelled by the source", StringComparison.Ordinal)),
            string.Join('\n', ["target:", .. _target.Output, "source:", .. source.Output]));
        await using var next = ChildProgram.Source(
            ["migrate", "--target", _target.Address.ToString(), "--ram", "16MiB", "--warmup-seconds", "0"]);
        Assert.Equal(CommandLine.Completed, await next.WaitForExitAsync(Limit));
    }

    /// <summary>
    /// A signal before the migration began (the guest booting or warming up): the summary and the report still say
    /// what happened, cancelled with nothing sent, and the target never heard of it.
    /// </summary>
    [Theory]
    [InlineData(PosixSignals.Interrupt, "SIGINT")]
    [InlineData(PosixSignals.Terminate, "SIGTERM")]
    public async Task ASignalDuringTheWarmUp_WritesTheSummaryAndTheReport(int signal, string name)
    {
        string report = Path.Combine(_directory, $"warm-up-{name}.json");
        await using var source = ChildProgram.Source(
        [
            "migrate", "--target", _target.Address.ToString(), "--ram", "16MiB", "--vcpus", "1",
            "--warmup-seconds", "3600", "--report", report,
        ]);
        await source.WaitForLineAsync("booting", Limit);
        PosixSignals.Send(source.ProcessId, signal);

        Assert.Equal(CommandLine.Failed, await source.WaitForExitAsync(Limit));
        string output = string.Join('\n', source.Output);
        Assert.True(source.Printed("source: migration cancelled: cancelled before migrating"), output);
        using var json = JsonDocument.Parse(await File.ReadAllTextAsync(report));
        Assert.Equal("cancelled", json.RootElement.GetProperty("status").GetString());
        string? error = json.RootElement.GetProperty("error").GetString();
        Assert.Contains("before migrating", error, StringComparison.Ordinal);
        Assert.Equal("idle", await _target.StateAsync());
    }

    /// <summary>
    /// Started with SIGINT ignored (inherited from its launcher: .NET then installs no handler and Ctrl+C does
    /// nothing), <c>migrate</c> says so at start, and SIGTERM still cancels.
    /// </summary>
    [Fact]
    public async Task StartedWithSigintIgnored_MigrateWarns_AndSigtermStillCancels()
    {
        await using var source = ChildProgram.Source(
        [
            "migrate", "--target", _target.Address.ToString(), "--ram", "16MiB", "--vcpus", "1",
            "--warmup-seconds", "3600",
        ], launcherIgnoresInterrupt: true, resetInterrupt: false);
        await source.WaitForLineAsync("warning: SIGINT is ignored", Limit);
        await source.WaitForLineAsync("booting", Limit);

        PosixSignals.Send(source.ProcessId, PosixSignals.Terminate);
        Assert.Equal(CommandLine.Failed, await source.WaitForExitAsync(Limit));
    }

    [Fact]
    public async Task TheReport_HasTheGuestsPaceAloneBeforeTheMigration_TheBaselineOfItsLoss()
    {
        string report = Path.Combine(_directory, "paced.json");
        await using var source = ChildProgram.Source(
        [
            "migrate", "--target", _target.Address.ToString(), "--ram", "32MiB", "--vcpus", "1", "--workload", "busy",
            "--busy-dirty-rate", "8MiB/s", "--warmup-seconds", "0", "--report", report,
        ]);
        Assert.Equal(0, await source.WaitForExitAsync(Limit));
        var convergence = Shared.Reporting.MigrationReport.FromJson(await File.ReadAllTextAsync(report)).Convergence;
        // the busy workload paces 8 MiB/s of page writes: 2048 a second, alone and unthrottled
        Assert.InRange(convergence.GuestOpsPerSecBefore ?? 0, 500, 1e6);
        Assert.True(source.Printed("ops/s alone before"), string.Join('\n', source.Output));
    }

    [Fact]
    public async Task TheTimeout_BoundsTheWholeMigration_EvenInsideARound()
    {
        // At 200 kB/s round 0 of 64 MiB would take minutes; the 2 s limit must end it inside that round.
        await using var source = ChildProgram.Source(
        [
            "migrate", "--target", _target.Address.ToString(), "--ram", "64MiB", "--vcpus", "1",
            "--max-bandwidth", "200kB/s", "--warmup-seconds", "0", "--timeout-seconds", "2", "--memhog-share", "0.9",
        ]);
        Assert.Equal(CommandLine.Failed, await source.WaitForExitAsync(Limit));
        Assert.True(source.Printed("longer than its 2 s limit"), string.Join('\n', source.Output));
        Assert.Equal("failed", await _target.WaitForStateAsync(Limit, "failed"));
    }

    [Theory]
    [InlineData("--workload", "3")]
    [InlineData("--downtime-ms", "NaN")]
    [InlineData("--channels", "99999999999")]
    [InlineData("--timeout-seconds", "1e400")]
    public async Task UsageErrors_Exit2_WithTheParsersMessage(string option, string value)
    {
        await using var source = ChildProgram.Source(["migrate", "--target", "http://127.0.0.1:1", option, value]);
        Assert.Equal(2, await source.WaitForExitAsync(Limit));
        Assert.True(source.Printed(option), string.Join('\n', source.Output));
        Assert.False(source.Printed("booting"), "a usage error booted a guest");
    }

    [Fact]
    public async Task AnUnwritableReportPath_Exits2_BeforeTheGuestBoots()
    {
        string report = Path.Combine(_directory, "no-such-directory", "report.json");
        await using var source = ChildProgram.Source(
            ["migrate", "--target", _target.Address.ToString(), "--report", report]);
        Assert.Equal(2, await source.WaitForExitAsync(Limit));
        Assert.True(source.Printed("--report"), string.Join('\n', source.Output));
        Assert.False(source.Printed("booting"), "the guest booted before the report path was checked");
    }

    [Fact]
    public async Task ATargetBeyondLoopbackWithoutCredentials_Exits2()
    {
        await using var target = ChildProgram.Target(["--listen", "http://0.0.0.0:0"]);
        Assert.Equal(2, await target.WaitForExitAsync(Limit));
        Assert.True(target.Printed("refusing to listen"), string.Join('\n', target.Output));
    }
}
