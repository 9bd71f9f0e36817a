namespace Migration.Shared.Precopy;

/// <summary>
/// A running migration's settings: the management API changes them, the migration reads them once at the start of
/// each round (rule C2), so a round runs with one set throughout and the report can say which.
/// </summary>
public sealed class LiveParameters
{
    private readonly object _gate = new();
    private MigrationParameters _current;

    public LiveParameters(MigrationParameters initial)
    {
        ArgumentNullException.ThrowIfNull(initial);
        initial.Validate();
        _current = initial;
    }

    /// <summary>The settings as they are now.</summary>
    public MigrationParameters Current => Volatile.Read(ref _current);

    /// <summary>Times the settings were changed.</summary>
    public int Changes { get; private set; }

    /// <summary>
    /// Applies <paramref name="change"/> to the current settings; throws <see cref="ArgumentException"/> naming the
    /// setting (in <paramref name="names"/>) and changes nothing when the result is out of range.
    /// </summary>
    public MigrationParameters Change(Func<MigrationParameters, MigrationParameters> change, OptionNames? names = null)
    {
        ArgumentNullException.ThrowIfNull(change);
        lock (_gate)
        {
            var next = change(_current);
            next.Validate(names);
            Volatile.Write(ref _current, next);
            Changes++;
            return next;
        }
    }
}
