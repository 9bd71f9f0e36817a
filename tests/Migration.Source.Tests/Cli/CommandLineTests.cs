using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Source.Cli;

namespace Migration.Source.Tests.Cli;

/// <summary>The exit codes a script reads: an unknown handover has its own, since the guest is left paused.</summary>
public sealed class CommandLineTests
{
    [Theory]
    [InlineData(MigrationStatus.Completed, true, CommandLine.Completed)]
    [InlineData(MigrationStatus.Completed, false, CommandLine.Failed)]
    [InlineData(MigrationStatus.Failed, false, CommandLine.Failed)]
    [InlineData(MigrationStatus.Cancelled, false, CommandLine.Failed)]
    [InlineData(MigrationStatus.Unknown, false, 3)]
    public void TheExitCode_FollowsTheReport(MigrationStatus status, bool verified, int exitCode) =>
        Assert.Equal(exitCode, CommandLine.ExitCodeOf(new MigrationReport { Status = status, Verified = verified }));
}
