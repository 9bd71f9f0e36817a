namespace Migration.Shared.Guest.Postcopy;

/// <summary>
/// This host cannot serve postcopy: userfaultfd(2) is missing or refused. The message names the cause and the fix;
/// precopy is unaffected.
/// </summary>
public sealed class UserfaultfdUnavailableException : Exception
{
    public UserfaultfdUnavailableException(string message)
        : base(message)
    {
    }

    public UserfaultfdUnavailableException()
    {
    }

    public UserfaultfdUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
