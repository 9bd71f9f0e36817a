namespace Migration.Shared.Devices;

/// <summary>
/// A participant's figures for one migration: a statistics record the device keeps, which the migration report
/// serialises as one of its sections, as it is.
/// </summary>
/// <remarks>
/// The devices sit below the report and do not know it; the report knows each record's type and where it goes. So a
/// figure is named once, in the device's record, and the report's JSON is that record's.
/// </remarks>
public interface IMigrationStats;
