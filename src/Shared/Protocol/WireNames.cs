namespace Migration.Shared.Protocol;

/// <summary>Names both sides must spell the same way: request headers and the features Begin negotiates.</summary>
public static class WireNames
{
    /// <summary>The header that ties a page stream to its migration.</summary>
    public const string MigrationIdHeader = "migration-id";

    /// <summary>The header that carries a migration's key (handed out by Begin) on every later call about it.</summary>
    public const string MigrationKeyHeader = "migration-key";

    /// <summary>The header of the shared token (<c>Bearer TOKEN</c>), when the target requires one.</summary>
    public const string AuthorizationHeader = "authorization";

    /// <summary>Batches carry their round, and the target keeps the newest copy of each page (R11).</summary>
    public const string RoundTagsFeature = "round-tags";

    /// <summary>The source runs free page hinting: hinted pages are neither sent nor digested.</summary>
    public const string FreePageHintFeature = "free-page-hint";

    /// <summary>Pages may be LZ4-compressed.</summary>
    public const string Lz4Feature = "lz4";

    /// <summary>
    /// Pages may go as deltas (XBZRLE) against the copy the target received of them earlier in the same migration. The
    /// source offers it; it sends deltas only if the target lists it in its reply.
    /// </summary>
    public const string DeltaPagesFeature = "delta-pages";

    /// <summary>
    /// The target takes a rehearsal Complete, a resume-first Complete and Confirm. A target that does not list it gets
    /// neither (to an older target a rehearsal would be a real Complete).
    /// </summary>
    public const string ResumeFirstFeature = "resume-first";
}
