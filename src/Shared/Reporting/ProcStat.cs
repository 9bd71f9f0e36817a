using System.Globalization;

namespace Migration.Shared.Reporting;

/// <summary>Reading Linux's <c>/proc/.../stat</c> lines: this process's and its threads' counters.</summary>
public static class ProcStat
{
    /// <summary>
    /// The fields after the parenthesised command name (which may hold spaces): index 0 is field 3 (state), so field
    /// N of proc(5) is at index N - 3.
    /// </summary>
    public static string[] FieldsAfterName(string stat)
    {
        ArgumentNullException.ThrowIfNull(stat);
        return stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
    }

    /// <summary>This process's minor page faults so far (field 10, minflt); 0 off Linux.</summary>
    public static long ProcessMinorFaults() => OperatingSystem.IsLinux()
        ? long.Parse(FieldsAfterName(File.ReadAllText("/proc/self/stat"))[7], CultureInfo.InvariantCulture)
        : 0;
}
