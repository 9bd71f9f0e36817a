using System.Globalization;

namespace Migration.Shared.Reporting;

/// <summary>
/// CPU time of this process's threads by name, from <c>/proc/self/task</c>: what each guest thread (a vCPU, the hint
/// driver, page reporting, the inflate driver) and each device thread cost. Linux only; empty elsewhere.
/// </summary>
public static class ThreadCpu
{
    /// <summary>Linux reports thread times in USER_HZ ticks, 100 per second on every architecture it runs on.</summary>
    private const double TicksPerSecond = 100;

    /// <summary>The threads of the guest model and its devices, as they are named.</summary>
    public static readonly IReadOnlyList<string> GuestThreadNames =
        ["balloon driver", "page reporting", "balloon inflate", "balloon device", "hint thread"];

    /// <summary>CPU seconds per thread name (threads of one name summed).</summary>
    public static Dictionary<string, double> ByName()
    {
        var result = new Dictionary<string, double>(StringComparer.Ordinal);
        if (!OperatingSystem.IsLinux())
        {
            return result;
        }

        foreach (string task in Directory.EnumerateDirectories("/proc/self/task"))
        {
            try
            {
                string name = File.ReadAllText(Path.Combine(task, "comm")).TrimEnd('\n');
                string stat = File.ReadAllText(Path.Combine(task, "stat"));
                string[] fields = ProcStat.FieldsAfterName(stat); // utime is field 14, stime 15
                double ticks = long.Parse(fields[11], CultureInfo.InvariantCulture)
                    + long.Parse(fields[12], CultureInfo.InvariantCulture);
                result[name] = result.GetValueOrDefault(name) + (ticks / TicksPerSecond);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException
                or IndexOutOfRangeException)
            {
                // the thread exited while we read it
            }
        }

        return result;
    }

    /// <summary>
    /// The guest's and devices' threads from <see cref="ByName"/>: the vCPUs summed as "vcpus", the named drivers and
    /// device threads as they are.
    /// </summary>
    public static Dictionary<string, double> GuestThreads()
    {
        var all = ByName();
        var guest = new Dictionary<string, double>(StringComparer.Ordinal)
        {
            ["vcpus"] = all.Where(t => t.Key.StartsWith("vcpu", StringComparison.Ordinal)).Sum(t => t.Value),
        };
        foreach (string name in GuestThreadNames)
        {
            if (all.TryGetValue(name, out double seconds))
            {
                guest[name] = seconds;
            }
        }

        return guest;
    }
}
