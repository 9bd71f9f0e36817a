namespace Migration.Source.Cli;

/// <summary>Exit codes of the source program.</summary>
internal static class CommandLine
{
    /// <summary>Completed and verified.</summary>
    public const int Completed = 0;

    /// <summary>Failed or cancelled; the source guest keeps running.</summary>
    public const int Failed = 1;

    /// <summary>The handover's outcome is unknown; the source guest stays paused (the report says what to do).</summary>
    public const int Unknown = 3;

    public static int ExitCodeOf(Shared.Reporting.MigrationReport result)
    {
        ArgumentNullException.ThrowIfNull(result);
        return result switch
        {
            { Status: Shared.Protocol.MigrationStatus.Completed, Verified: true } => Completed,
            { Status: Shared.Protocol.MigrationStatus.Unknown } => Unknown,
            _ => Failed,
        };
    }
}
