using System.Globalization;
using System.Text.Json.Serialization;

namespace Migration.Bench.Peers;

/// <summary>One migration of the side-by-side comparison, by either engine, in figures both can give.</summary>
internal sealed class PeerRun
{
    public const string Qemu = "qemu";
    public const string Ours = "ours";

    /// <summary>
    /// The .NET socket floor beside the random RAM rows: not a migration, so never a <see cref="PeerRun"/>; its runs
    /// are <see cref="Floor.FloorRun"/>s in <see cref="PeerResults.Floor"/> and its rows carry this engine name.
    /// </summary>
    public const string Floor = "floor";

    /// <summary><see cref="Qemu"/> or <see cref="Ours"/>.</summary>
    public required string Engine { get; init; }

    /// <summary>The work, the same for both engines: "random-2ch", "idle", "idle-hints", "stale", "stale-hints".</summary>
    public required string Work { get; init; }

    public required int Channels { get; init; }

    public required int Repeat { get; init; }

    public double TotalMs { get; set; }

    /// <summary>
    /// Ours: pause to the target's verified resume. QEMU: its own "downtime" (source stop to the last byte sent).
    /// </summary>
    public double DowntimeMs { get; set; }

    /// <summary>QEMU: the source's STOP event to the destination's RESUME event (the guest-visible gap).</summary>
    public double? StopToResumeMs { get; set; }

    public long BytesOnWire { get; set; }

    public double SourceCpuSeconds { get; set; }

    public double TargetCpuSeconds { get; set; }

    /// <summary>
    /// Ours: the target's verification. QEMU random RAM: the two RAM files compared. QEMU's Linux guest: its
    /// heartbeat on the destination's serial port and no kernel crash there. Null: not checked.
    /// </summary>
    public bool? Verified { get; set; }

    /// <summary>QEMU's Linux guest: the first crash line its kernel printed on the destination, if any.</summary>
    public string? GuestCrash { get; set; }

    /// <summary>1-minute load average just before the run (the machine is shared).</summary>
    public double LoadAverage { get; set; }

    public string? Error { get; set; }

    public string? Log { get; set; }

    [JsonIgnore]
    public bool Ok => Error is null && Verified != false;

    /// <summary>Bytes on the wire over total time (1 GB = 1e9 bytes).</summary>
    [JsonIgnore]
    public double GBps => BytesOnWire / 1e9 / Math.Max(TotalMs / 1000, 1e-9);

    /// <summary>CPU seconds of both processes per GB moved.</summary>
    [JsonIgnore]
    public double CpuPerGB => (SourceCpuSeconds + TargetCpuSeconds) / Math.Max(BytesOnWire / 1e9, 1e-9);

    [JsonIgnore]
    public string Label => $"{Engine} {Work} #{Repeat}";

    /// <summary>The work of random RAM at <paramref name="channels"/> channels: "random-2ch".</summary>
    public static string RandomWork(int channels) => $"random-{channels}ch";

    /// <summary>The channel count of a random RAM work ("random-2ch"), or null for any other work.</summary>
    public static int? RandomChannels(string work)
    {
        const string prefix = "random-";
        return work is not null && work.StartsWith(prefix, StringComparison.Ordinal)
            && work.EndsWith("ch", StringComparison.Ordinal)
            && int.TryParse(work.AsSpan(prefix.Length, work.Length - prefix.Length - 2), NumberStyles.None,
                CultureInfo.InvariantCulture, out int n) && n > 0
            ? n
            : null;
    }
}
