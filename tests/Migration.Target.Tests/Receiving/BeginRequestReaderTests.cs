using Grpc.Core;
using Migration.Target.Receiving;

namespace Migration.Target.Tests.Receiving;

public sealed class BeginRequestReaderTests
{
    [Fact]
    public void AValidRequest_GivesItsGuestConfiguration()
    {
        var config = BeginRequestReader.Read(Targets.Begin("a", ramBytes: 16L << 20, vcpus: 2));
        Assert.Equal((16L << 20, 2), (config.RamBytes, config.Vcpus));
    }

    public static TheoryData<string, string> BadRequests => new()
    {
        { "id", "migration_id may hold only" },
        { "long id", "at most 64" },
        { "page size", "page size 8192 is not supported" },
        { "json", "guest configuration rejected" },
        { "config", "guest configuration rejected" },
        { "geometry", "geometry mismatch" },
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public void ABadRequest_IsInvalidArgumentNamingTheField(string what, string expected)
    {
        var request = Targets.Begin("a");
        switch (what)
        {
            case "id": request.MigrationId = "a b"; break;
            case "long id": request.MigrationId = new string('x', 65); break;
            case "page size": request.PageSize = 8192; break;
            case "json": request.GuestConfigJson = "{not json"; break;
            case "config": request.GuestConfigJson = "{\"vcpus\":0}"; break;
            default: request.Vcpus = 7; break;
        }

        var ex = Assert.Throws<RpcException>(() => BeginRequestReader.Read(request));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Contains(expected, ex.Status.Detail, StringComparison.Ordinal);
    }
}
