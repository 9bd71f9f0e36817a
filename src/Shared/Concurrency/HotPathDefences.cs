namespace Migration.Shared.Concurrency;

/// <summary>
/// The two defences that sit on hot paths, as flags read once at construction: the documented exception to the rule
/// that mutants live in the tests. A seam there (an interface call per guest store, per log word) would cost the
/// write path and the sync; a readonly field the JIT folds does not. Production always uses <see cref="Production"/>.
/// </summary>
/// <param name="StoreBeforeMark">
/// The guest write path stores, fences, then marks the page dirty (R7). False marks first.
/// </param>
/// <param name="AtomicLogFetch">
/// An eager sync fetches and clears each log word with one atomic exchange (R8). False reads then clears.
/// </param>
internal readonly record struct HotPathDefences(bool StoreBeforeMark, bool AtomicLogFetch)
{
    public static readonly HotPathDefences Production = new(StoreBeforeMark: true, AtomicLogFetch: true);
}
