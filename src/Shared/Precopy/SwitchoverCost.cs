using System.Globalization;

namespace Migration.Shared.Precopy;

/// <summary>
/// What a switchover costs beyond sending its pages, measured on both sides while precopy runs, so the downtime
/// estimate counts every phase the downtime will have: the final dirty sync (as long as the last round's sync took),
/// the state save, closing the page streams, and the Complete round trip with the target's rebuild and resume of a
/// guest of the same shape (a rehearsal, see <c>RehearseSwitchoverAsync</c>). Nothing is capped: a switchover whose
/// fixed cost alone exceeds the limit does not stop.
/// </summary>
/// <remarks>
/// Rehearsals are taken at setup and again each time precopy is about to stop, so the estimate follows the machine's
/// load. The estimate takes the costliest of the latest three rehearsals plus how far they spread: one lucky sample on a
/// loaded machine must not let precopy stop on a downtime it will not keep, and one unlucky sample ages out as precopy
/// goes on.
/// </remarks>
internal sealed class SwitchoverCost
{
    /// <summary>The estimate counts the costliest of this many latest rehearsals.</summary>
    public const int Counted = 3;

    private readonly Queue<Rehearsal> _latest = new();

    /// <summary>One rehearsal's figures (ms): what saving the state, closing the streams and Complete took.</summary>
    public readonly record struct Rehearsal(double SaveStateMs, double CloseStreamsMs, double CompleteMs)
    {
        public double TotalMs => SaveStateMs + CloseStreamsMs + CompleteMs;
    }

    /// <summary>How long the last dirty sync of a running guest took: what the final sync is expected to take.</summary>
    public double SyncMs { get; private set; }

    /// <summary>Rehearsals taken so far.</summary>
    public int Rehearsals { get; private set; }

    /// <summary>The rehearsal the estimate uses (the costliest of the latest few), or null before the first.</summary>
    public Rehearsal? Worst => _latest.Count == 0 ? null : _latest.MaxBy(r => r.TotalMs);

    /// <summary>
    /// How much the latest rehearsals disagree (the costliest minus the cheapest): on a machine whose load comes and
    /// goes, the switchover may cost that much more than any sample showed, so the estimate adds it.
    /// </summary>
    public double SpreadMs => _latest.Count < 2 ? 0 : _latest.Max(r => r.TotalMs) - _latest.Min(r => r.TotalMs);

    /// <summary>Everything but the pages: the final sync, the costliest recent rehearsal and their spread.</summary>
    public double FixedMs => SyncMs + (Worst?.TotalMs ?? 0) + SpreadMs;

    public void Add(Rehearsal rehearsal)
    {
        _latest.Enqueue(rehearsal);
        if (_latest.Count > Counted)
        {
            _latest.Dequeue();
        }

        Rehearsals++;
    }

    public void RecordSync(double ms) => SyncMs = ms;

    /// <summary>The estimate split by phase, for the report (<c>timing.expectedDowntimePhasesMs</c>).</summary>
    public Dictionary<string, double> Phases(double pagesMs)
    {
        var counted = Worst ?? default;
        return new Dictionary<string, double>(StringComparer.Ordinal)
        {
            ["finalSync"] = SyncMs,
            ["pages"] = pagesMs,
            ["saveState"] = counted.SaveStateMs,
            ["closeStreams"] = counted.CloseStreamsMs,
            ["complete"] = counted.CompleteMs,
            ["spread"] = SpreadMs,
        };
    }

    public override string ToString()
    {
        var counted = Worst ?? default;
        return string.Create(CultureInfo.InvariantCulture,
            $"{FixedMs:F1} ms (final sync {SyncMs:F1}, state {counted.SaveStateMs:F1}, streams " +
            $"{counted.CloseStreamsMs:F1}, Complete with the target's rebuild and resume {counted.CompleteMs:F1}, " +
            $"spread of the latest rehearsals {SpreadMs:F1})");
    }
}
