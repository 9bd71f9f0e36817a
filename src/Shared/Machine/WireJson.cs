using System.Text.Json;
using System.Text.Json.Serialization;

namespace Migration.Shared.Machine;

/// <summary>
/// Compile-time JSON for the guest configuration that travels in Begin: no reflection on the setup path, whose first
/// call is costly on each side of every migration (the processes are fresh, so nothing is warm; docs/design.md).
/// Same conventions as the reports: camelCase, enums as camelCase strings. A property neither side knows is an error,
/// not a silent default: both ends run the same build, so an unknown name is damage or a mistake.
/// </summary>
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, UseStringEnumConverter = true,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow)]
[JsonSerializable(typeof(GuestConfig))]
public sealed partial class WireJson : JsonSerializerContext;
