using Migration.Shared.Protocol;

namespace Migration.Shared.Tests.Protocol;

public sealed class ProtocolVersionsTests
{
    [Theory]
    [InlineData(0u)] // a version-1 source predates the field
    [InlineData(ProtocolVersions.Previous)]
    [InlineData(ProtocolVersions.Current)]
    public void TheCurrentVersionAndTheOneBefore_AreAccepted(uint field) =>
        Assert.Null(ProtocolVersions.Problem(field));

    [Theory]
    [InlineData(ProtocolVersions.Current + 1)]
    [InlineData(uint.MaxValue)]
    public void AnyOtherVersion_IsRefusedNamingBoth(uint field)
    {
        string? problem = ProtocolVersions.Problem(field);
        Assert.NotNull(problem);
        Assert.Contains($"protocol version {field};", problem, StringComparison.Ordinal);
        Assert.Contains($"speaks version {ProtocolVersions.Current}", problem, StringComparison.Ordinal);
        Assert.Contains($"accepts versions {ProtocolVersions.Previous} and {ProtocolVersions.Current}", problem,
            StringComparison.Ordinal);
    }
}
