using System.Text.Json;
using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Shared.Hosting;
using Migration.Shared.Machine;
using Migration.Shared.Protocol;

namespace Migration.Target.Receiving;

/// <summary>
/// Reads and checks a Begin request: the guest configuration it carries, against its own geometry fields.
/// </summary>
internal static class BeginRequestReader
{
    /// <summary>A guest configuration is a few hundred bytes; anything near this is not one.</summary>
    private const int MaxConfigJsonLength = 64 << 10;

    /// <summary>
    /// The guest configuration to host; throws an InvalidArgument <c>RpcException</c> naming what is wrong, or
    /// FailedPrecondition for a protocol version this target does not speak.
    /// </summary>
    public static GuestConfig Read(BeginRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (ProtocolVersions.Problem(request.ProtocolVersion) is { } versionProblem)
        {
            throw RpcErrors.FailedPrecondition(versionProblem);
        }

        if (MigrationIds.Problem(request.MigrationId) is { } idProblem)
        {
            throw RpcErrors.InvalidArgument(idProblem);
        }

        if (MigrationOwner.KeyProblem(request.MigrationKey) is { } keyProblem)
        {
            throw RpcErrors.InvalidArgument(keyProblem);
        }

        if (request.GuestConfigJson.Length > MaxConfigJsonLength)
        {
            throw RpcErrors.InvalidArgument(
                $"guest_config_json has {request.GuestConfigJson.Length} characters (at most {MaxConfigJsonLength})");
        }

        if (request.PageSize != PageGeometry.PageSize)
        {
            throw RpcErrors.InvalidArgument(
                $"page size {request.PageSize} is not supported (only {PageGeometry.PageSize})");
        }

        GuestConfig config;
        try
        {
            config = JsonSerializer.Deserialize(request.GuestConfigJson, WireJson.Default.GuestConfig)
                ?? throw new ArgumentException("guest_config_json is empty");
            config.Validate();
        }
        catch (Exception ex) when (ex is JsonException or ArgumentException or NotSupportedException)
        {
            throw RpcErrors.InvalidArgument($"guest configuration rejected: {ex.Message}");
        }

        if ((ulong)config.RamBytes != request.RamBytes || (uint)config.Vcpus != request.Vcpus)
        {
            throw RpcErrors.InvalidArgument(
                $"geometry mismatch: request says {request.RamBytes} bytes / {request.Vcpus} vCPUs, " +
                $"configuration {config.RamBytes} / {config.Vcpus}");
        }

        return config;
    }
}
