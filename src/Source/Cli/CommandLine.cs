namespace Migration.Source.Cli;

/// <summary>Exit codes of the source program.</summary>
internal static class CommandLine
{
    /// <summary>Completed and verified.</summary>
    public const int Completed = 0;

    /// <summary>Failed or cancelled; the source guest keeps running.</summary>
    public const int Failed = 1;
}
