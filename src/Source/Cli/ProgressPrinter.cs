using Migration.Shared.Precopy;

namespace Migration.Source.Cli;

/// <summary>
/// Live progress: on a terminal one line rewritten in place; when output is redirected (CI, scripts) one plain line per
/// round, so logs stay readable.
/// </summary>
internal sealed class ProgressPrinter(TextWriter output, bool interactive) : IProgress<RoundProgress>
{
    private readonly object _lock = new();

    public static ProgressPrinter ForConsole() => new(Console.Out, !Console.IsOutputRedirected);

    public void Report(RoundProgress p)
    {
        string phase = p.Phase == MigrationPhase.Precopy ? "precopy" : "stop-and-copy";
        string line = $"{phase,-13} round {p.Round,3}  remaining {p.RemainingPages,9:N0} pages  " +
                      $"sent {p.PagesSent,10:N0}  {p.ThroughputMBps,8:F1} MB/s  " +
                      $"expected downtime {p.ExpectedDowntimeMs,8:F1} ms" +
                      (p.ThrottlePercent > 0 ? $"  throttle {p.ThrottlePercent,3:F0}%" : string.Empty);
        if (p.Prediction is { } prediction)
        {
            // on a terminal the line is rewritten in place, so the prediction rides on it; in a log it gets its own
            line += interactive ? $"  ({prediction})" : $"{Environment.NewLine}              {prediction}";
        }

        lock (_lock)
        {
            if (interactive)
            {
                output.Write("\r" + line);
                if (p.Final)
                {
                    output.WriteLine();
                }
            }
            else
            {
                output.WriteLine(line);
            }
        }
    }
}
