namespace Migration.Shared.Precopy;

/// <summary>
/// What a refusal calls the options a caller sets: the command line's flags, or the management API's fields
/// (StartMigrationRequest in proto/management.proto). Options only the process's own command line sets (timeouts,
/// credentials) keep their flags in both.
/// </summary>
public sealed record OptionNames
{
    public static readonly OptionNames Flags = new()
    {
        Api = false,
        Target = "--target",
        Downtime = "--downtime-ms",
        MaxBandwidth = "--max-bandwidth",
        Channels = "--channels",
        MaxRounds = "--max-rounds",
        Converge = "--converge",
        Throttle = "--throttle",
        DirtyLimit = "--dirty-limit",
        DeltaCache = "--delta-cache-mib",
    };

    public static readonly OptionNames Fields = new()
    {
        Api = true,
        Target = "target",
        Downtime = "downtime_ms",
        MaxBandwidth = "max_bandwidth_bytes_per_second",
        Channels = "channels",
        MaxRounds = "max_rounds",
        Converge = "converge",
        Throttle = "throttle_initial/throttle_increment/throttle_max",
        DirtyLimit = "dirty_limit_bytes_per_second",
        DeltaCache = "delta_cache_bytes",
    };

    /// <summary>The names are the management API's: a remedy is said in fields, not flags.</summary>
    public required bool Api { get; init; }

    public required string Target { get; init; }

    public required string Downtime { get; init; }

    public required string MaxBandwidth { get; init; }

    public required string Channels { get; init; }

    public required string MaxRounds { get; init; }

    public required string Converge { get; init; }

    public required string Throttle { get; init; }

    public required string DirtyLimit { get; init; }

    public required string DeltaCache { get; init; }
}
