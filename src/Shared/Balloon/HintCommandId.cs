namespace Migration.Shared.Balloon;

/// <summary>Command-id values: what the guest reads from the device's config.</summary>
public static class HintCommandId
{
    public const uint Stop = 0;
    public const uint Done = 1;

    /// <summary>Ids are above this; the first one issued is <c>Min + 1</c>, and they wrap back to it.</summary>
    public const uint Min = 0x80000000;

    public static bool IsRunId(uint id) => id > Min;

    /// <summary>
    /// The id after <paramref name="id"/>, wrapping from <see cref="uint.MaxValue"/> back to <c>Min + 1</c>.
    /// </summary>
    public static uint Next(uint id) => id == uint.MaxValue ? Min + 1 : id + 1;
}
