using System.CommandLine;
using Migration.Shared.Cli;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Transport;
using Migration.Source.Cli;

namespace Migration.Source.Tests.Cli;

/// <summary>
/// The command line's contract: typed values, names for choices, defaults read from the option records.
/// </summary>
public sealed class MigrateCommandTests
{
    private static ParseResult Parse(params string[] args)
    {
        var root = new RootCommand { MigrateCommand.Create() };
        return root.Parse(["migrate", "--target", "http://127.0.0.1:1", .. args]);
    }

    [Fact]
    public void NoFlags_GiveTheRecordsDefaults()
    {
        var parse = Parse();
        Assert.Empty(parse.Errors);
        var guest = new GuestOptions();
        var root = new RootCommand();
        var command = new Command("x");
        foreach (var option in guest.All)
        {
            command.Options.Add(option);
        }

        root.Subcommands.Add(command);
        var config = guest.Bind(root.Parse(["x"]));
        Assert.Equal(new GuestConfig() with { Workload = config.Workload }, config);
        Assert.Equal(new WorkloadOptions(), config.Workload);
    }

    [Theory]
    [InlineData("--workload", "3")]          // a number is not a workload name
    [InlineData("--workload", "hog")]
    [InlineData("--dirty-log", "1")]
    [InlineData("--compress", "zstd")]
    [InlineData("--compress", "none,lz4")]   // a list of names parses as flags combined: refused, not lz4
    [InlineData("--compress", " lz4")]
    [InlineData("--hints", "off,on")]
    [InlineData("--hints", "yes")]
    [InlineData("--downtime-ms", "NaN")]
    [InlineData("--downtime-ms", "-5")]
    [InlineData("--downtime-ms", "Infinity")]
    [InlineData("--memhog-share", "1.5")]
    [InlineData("--channels", "0")]
    [InlineData("--channels", "99999999999")]
    [InlineData("--ram", "lots")]
    [InlineData("--max-bandwidth", "fast")]
    [InlineData("--poison", "0x1ff")]
    [InlineData("--seed", "-1")]
    [InlineData("--delta-cache-mib", "-1")]
    [InlineData("--delta-cache-mib", "64MiB")]   // a number of MiB, not a size with units
    [InlineData("--delta-cache-mib", "2000000")] // above the 1 TiB a cache may hold
    public void BadValues_AreParseErrorsNamingTheOption(string option, string value)
    {
        var parse = Parse(option, value);
        var error = Assert.Single(parse.Errors);
        Assert.Contains(option, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ChoicesAcceptNames_InAnyCase()
    {
        var parse = Parse("--workload", "MemHog", "--dirty-log", "manual", "--compress", "lz4", "--hints", "OFF");
        Assert.Empty(parse.Errors);
    }

    [Fact]
    public void TheHandoverAndSecurityFlags_Parse()
    {
        var parse = Parse("--complete-timeout", "2", "--handover-window", "3", "--stall-timeout", "4",
            "--token-file", "t", "--tls-ca", "ca.pem", "--tls-client-cert", "c.pem", "--tls-client-key", "k.pem");
        Assert.Empty(parse.Errors);
        Assert.Equal(3.0, parse.GetValue<double>("--handover-window"));
    }

    [Fact]
    public void TheTargetIsRequired()
    {
        var root = new RootCommand { MigrateCommand.Create() };
        Assert.Contains(root.Parse(["migrate"]).Errors, e => e.Message.Contains("--target", StringComparison.Ordinal));
    }

    [Fact]
    public void OptionDefaults_AreTheOptionsRecordsDefaults()
    {
        var defaults = MigrationOptions.Defaults;
        var parse = Parse();
        double downtime = parse.GetValue<double>("--downtime-ms");
        Assert.Equal(defaults.DowntimeLimit.TotalMilliseconds, downtime);
        Assert.Equal(defaults.Channels, parse.GetValue<int>("--channels"));
        Assert.Equal(defaults.MaxRounds, parse.GetValue<int>("--max-rounds"));
        Assert.Equal(defaults.Compression, parse.GetValue<Compression>("--compress"));
        Assert.Equal(defaults.DeltaCacheBytes, (long)parse.GetValue<int>("--delta-cache-mib") << 20);
        Assert.Equal(defaults.Hints ? OnOff.On : OnOff.Off, parse.GetValue<OnOff>("--hints"));
        Assert.Equal(new GuestConfig().DirtyLogMode, parse.GetValue<DirtyLogMode>("--dirty-log"));
    }
}
