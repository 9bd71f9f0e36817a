namespace Migration.Shared.Protocol;

/// <summary>
/// Where a target stands (the <c>state</c> of its Status reply). One migration at a time:
/// idle -> receiving -> verifying -> resumed, or -> failed from receiving or verifying; failed and idle accept the
/// next Begin.
/// </summary>
public enum TargetState
{
    /// <summary>No migration yet.</summary>
    Idle,

    /// <summary>Begin accepted; pages are arriving.</summary>
    Receiving,

    /// <summary>Complete arrived: rebuilding, comparing digests, self-checking. Nothing may cancel it now.</summary>
    Verifying,

    /// <summary>The guest verified and runs here.</summary>
    Resumed,

    /// <summary>The last migration was discarded (bad input, cancel, broken stream, failed verification).</summary>
    Failed,
}

/// <summary>
/// The wire spelling of <see cref="TargetState"/> (lower case, as the Status reply has always carried it).
/// </summary>
public static class TargetStates
{
    public static string ToWire(this TargetState state) => state switch
    {
        TargetState.Idle => "idle",
        TargetState.Receiving => "receiving",
        TargetState.Verifying => "verifying",
        TargetState.Resumed => "resumed",
        TargetState.Failed => "failed",
        _ => throw new ArgumentOutOfRangeException(nameof(state), state, "unknown target state"),
    };

    /// <summary>Parses a Status reply's state; false for anything this build does not know.</summary>
    public static bool TryParse(string? wire, out TargetState state)
    {
        foreach (var candidate in Enum.GetValues<TargetState>())
        {
            if (string.Equals(candidate.ToWire(), wire, StringComparison.Ordinal))
            {
                state = candidate;
                return true;
            }
        }

        state = default;
        return false;
    }

    /// <summary>Whether a target in this state is busy with a migration (a new Begin would be refused).</summary>
    public static bool IsBusy(this TargetState state) => state is TargetState.Receiving or TargetState.Verifying;
}
