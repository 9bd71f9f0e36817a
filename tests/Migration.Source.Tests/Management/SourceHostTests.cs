using Grpc.Core;
using Microsoft.Extensions.Logging.Abstractions;
using Migration.Management;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Source.Management;

namespace Migration.Source.Tests.Management;

public sealed class SourceHostTests
{
    [Theory]
    [InlineData(double.NaN, "downtime_ms")]
    [InlineData(1e300, "downtime_ms")]
    [InlineData(-5, "downtime_ms")]
    public void BadMigrationOptions_AreInvalidArgument_AndNothingStarts(double downtimeMs, string names)
    {
        using var vm = VirtualMachine.Boot(new GuestConfig { RamBytes = 16L << 20, Vcpus = 1 });
        using var host = new SourceHost(vm, MigrationOptions.Defaults, NullLoggerFactory.Instance, TextWriter.Null);
        var error = Assert.Throws<RpcException>(() => host.StartMigration(new StartMigrationRequest
        {
            Target = "http://127.0.0.1:1",
            DowntimeMs = downtimeMs,
        }));
        Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
        Assert.Contains(names, error.Status.Detail, StringComparison.Ordinal);
        Assert.Equal("none", host.QueryMigration(new QueryMigrationRequest()).Status);

        var channels = Assert.Throws<RpcException>(() => host.StartMigration(new StartMigrationRequest
        {
            Target = "http://127.0.0.1:1",
            Channels = 0,
        }));
        Assert.Equal(StatusCode.InvalidArgument, channels.StatusCode);
    }
}
