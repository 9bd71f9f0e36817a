namespace Migration.Shared.Protocol;

/// <summary>What a migration id may be: bounded and printable, since it appears in logs, reports and error texts.</summary>
public static class MigrationIds
{
    public const int MaxLength = 64;

    /// <summary>Null when <paramref name="id"/> is acceptable, else why not.</summary>
    public static string? Problem(string? id)
    {
        if (string.IsNullOrEmpty(id))
        {
            return "migration_id is required";
        }

        if (id.Length > MaxLength)
        {
            return $"migration_id has {id.Length} characters (at most {MaxLength})";
        }

        foreach (char c in id)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
            {
                return "migration_id may hold only ASCII letters, digits, '-', '_' and '.'";
            }
        }

        return null;
    }
}
