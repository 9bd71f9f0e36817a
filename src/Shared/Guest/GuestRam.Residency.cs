using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using Migration.Shared.DirtyTracking;

namespace Migration.Shared.Guest;

/// <summary>
/// Which guest pages the host kernel backs, from <c>/proc/self/pagemap</c>: the host's own truth about a discarded
/// page. A page of the private anonymous mapping that is neither present nor swapped out has had no store since it
/// was discarded (or ever) and reads as zero, whatever the guest's or the device's bookkeeping says.
/// </summary>
public sealed unsafe partial class GuestRam
{
    private const ulong PagemapPresent = 1UL << 63;
    private const ulong PagemapSwapped = 1UL << 62;
    private const int PagemapEntriesPerRead = 4096;

    /// <summary>
    /// Clears from <paramref name="pages"/> every page in [<paramref name="first"/>, +<paramref name="count"/>) that
    /// the host backs (present or swapped), leaving set only pages that are certainly unbacked zero. Returns false,
    /// clearing the whole range, when residency cannot be read (no mapping, no pagemap, or host pages of another size
    /// than the guest's, where one pagemap entry is not one guest page): the caller must then assume every page may
    /// hold data.
    /// </summary>
    public bool KeepOnlyUnbacked(PageBitmap pages, long first, long count)
    {
        ArgumentNullException.ThrowIfNull(pages);
        CheckRange(first, count);
        if (count == 0)
        {
            return true;
        }

        if (!_mapped || Environment.SystemPageSize != PageGeometry.PageSize || OpenPagemap() is not { } handle)
        {
            pages.ClearRange(first, count);
            return false;
        }

        using (handle)
        {
            byte[] entries = new byte[PagemapEntriesPerRead * 8];
            long virtualPage = ((long)_base >> PageGeometry.PageShift) + first;
            for (long done = 0; done < count;)
            {
                int n = (int)Math.Min(PagemapEntriesPerRead, count - done);
                int read;
                try
                {
                    read = RandomAccess.Read(handle, entries.AsSpan(0, n * 8), (virtualPage + done) * 8);
                }
                catch (IOException)
                {
                    read = 0;
                }

                if (read != n * 8)
                {
                    pages.ClearRange(first, count);
                    return false;
                }

                for (int i = 0; i < n; i++)
                {
                    ulong entry = BinaryPrimitives.ReadUInt64LittleEndian(entries.AsSpan(i * 8, 8));
                    if ((entry & (PagemapPresent | PagemapSwapped)) != 0)
                    {
                        pages.Clear(first + done + i);
                    }
                }

                done += n;
            }
        }

        return true;
    }

    private static SafeFileHandle? OpenPagemap()
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        try
        {
            return File.OpenHandle("/proc/self/pagemap", FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
