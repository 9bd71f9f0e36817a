using Microsoft.Extensions.Logging;

namespace Migration.Source.Cli;

/// <summary>The source's log output: single lines on stderr, so stdout keeps the progress and the summary.</summary>
internal static class ConsoleLogging
{
    public static ILoggerFactory Create(LogLevel minimum) => LoggerFactory.Create(builder => builder
        .SetMinimumLevel(minimum)
        .AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss.fff ";
        })
        .AddFilter("Microsoft", LogLevel.Warning)
        .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace));
}
