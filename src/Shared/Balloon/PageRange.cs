namespace Migration.Shared.Balloon;

/// <summary>A run of guest pages: <see cref="Count"/> pages from <see cref="First"/>.</summary>
public readonly record struct PageRange(long First, long Count)
{
    public long End => First + Count;

    public override string ToString() => $"[{First}, +{Count})";

    /// <summary>
    /// Sorts <paramref name="ranges"/> and merges adjacent ones in place. Returns an error naming the first page two
    /// ranges share, or null.
    /// </summary>
    public static string? SortAndMerge(List<PageRange> ranges)
    {
        ArgumentNullException.ThrowIfNull(ranges);
        ranges.Sort((a, b) => a.First.CompareTo(b.First));
        int w = 0;
        for (int r = 0; r < ranges.Count; r++)
        {
            var next = ranges[r];
            if (w > 0 && next.First < ranges[w - 1].End)
            {
                return $"page {next.First} is named twice in one request";
            }

            if (w > 0 && next.First == ranges[w - 1].End)
            {
                ranges[w - 1] = ranges[w - 1] with { Count = ranges[w - 1].Count + next.Count };
            }
            else
            {
                ranges[w++] = next;
            }
        }

        ranges.RemoveRange(w, ranges.Count - w);
        return null;
    }
}
