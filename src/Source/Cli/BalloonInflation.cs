using System.Diagnostics;
using Migration.Shared.Guest;
using Migration.Shared.Machine;

namespace Migration.Source.Cli;

/// <summary>
/// <c>--balloon SIZE</c>: sets the balloon's target and waits until the guest's driver reports it there, or stops
/// getting closer (out of puff, pressure), as a user watching <c>query-balloon</c> would.
/// </summary>
internal static class BalloonInflation
{
    /// <summary>How long <c>actual</c> may stand still before the wait gives up on the target.</summary>
    private static readonly TimeSpan Stall = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The balloon's size in pages; throws <see cref="ArgumentException"/>, naming <paramref name="what"/> was given,
    /// for a size the guest cannot give.
    /// </summary>
    public static long PagesFor(long bytes, long ramBytes, string what = "--balloon")
    {
        if (bytes < 0 || bytes >= ramBytes)
        {
            throw new ArgumentException(
                $"{what} {bytes} bytes: the balloon must be smaller than the guest's RAM ({ramBytes} bytes).");
        }

        return PageGeometry.PagesFor(bytes);
    }

    /// <summary>Inflates (or deflates) to <paramref name="pages"/> and prints how it went.</summary>
    public static async Task RunAsync(VirtualMachine vm, long pages, TextWriter output, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(vm);
        ArgumentNullException.ThrowIfNull(output);
        long rssBefore = Environment.WorkingSet;
        var sw = Stopwatch.StartNew();
        vm.Balloon.SetTargetPages(pages);
        long last = vm.Balloon.ActualPages;
        var lastMoved = Stopwatch.StartNew();
        while (vm.Balloon.ActualPages != vm.Balloon.TargetPages && lastMoved.Elapsed < Stall)
        {
            await Task.Delay(10, ct).ConfigureAwait(false);
            long now = vm.Balloon.ActualPages;
            if (now != last)
            {
                (last, lastMoved) = (now, Stopwatch.StartNew());
            }
        }

        var s = vm.Balloon.Stats;
        output.WriteLine($"source: balloon at {s.ActualPages >> 8:N0} MiB of {pages >> 8:N0} MiB asked " +
            $"(target now {s.TargetPages >> 8:N0} MiB) in {sw.Elapsed.TotalMilliseconds:F0} ms, " +
            $"{vm.Balloon.Encoding.ToString().ToLowerInvariant()} encoding, {s.InflateRequests:N0} inflate requests; " +
            $"RSS {rssBefore >> 20:N0} -> {Environment.WorkingSet >> 20:N0} MiB" +
            (s.DeviceErrors == 0 ? string.Empty : $"; {s.DeviceErrors} device errors ({s.LastError})"));
    }
}
