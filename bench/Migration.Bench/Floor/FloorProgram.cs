using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Hashing;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text.Json;
using Migration.Shared.DirtyTracking;
using Migration.Shared.Guest;
using Migration.Shared.Reporting;
using Migration.Shared.Verification;

namespace Migration.Bench.Floor;

/// <summary>
/// The two processes of the floor (<c>bench --only floor</c>): guest RAM sent over plain TCP sockets on loopback, with
/// nothing of the product's transport in the way. The sender fills its <see cref="GuestRam"/> with random data and
/// writes it with 1 MiB <see cref="Socket.Send(ReadOnlySpan{byte})"/> calls straight from the mapping; the receiver
/// reads each connection straight into the same offsets of its own preallocated mapping. Channel <c>i</c> of
/// <c>n</c> carries the <c>i</c>-th of <c>n</c> equal page ranges, each on its own thread with blocking calls. Both
/// then digest their RAM (the product's page digests, folded into one) so the bench can compare them.
/// </summary>
/// <remarks>
/// Each side measures its own CPU time and wall time over the transfer only: the sender from before it connects until
/// every channel's acknowledgement (one byte the receiver sends once all channels are in its RAM), the receiver from
/// its first connection until the last byte. Filling, preallocating and digesting are outside both windows.
/// </remarks>
internal static class FloorProgram
{
    /// <summary>Bytes per send and per receive call.</summary>
    public const int ChunkBytes = 1 << 20;

    /// <summary>Per connection, before its pages: the channel's index and the channel count, little-endian.</summary>
    private const int HeaderBytes = 8;

    public static int Receive(long ramBytes, int channels, TimeSpan timeout, TextWriter output)
    {
        using var watchdog = Watchdog(timeout, "floor-receive", output);
        using var ram = GuestRam.Allocate(ramBytes);
        ram.Populate(); // as the target's --prealloc: no page fault per first write in the measured window
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(channels);
        output.WriteLine($"{FloorSide.ListeningPrefix}{((IPEndPoint)listener.LocalEndPoint!).Port}");
        output.Flush();

        double cpu0 = 0;
        long t0 = 0;
        var sockets = new Socket?[channels];
        var errors = new string?[channels];
        try
        {
            Span<byte> header = stackalloc byte[HeaderBytes];
            for (int accepted = 0; accepted < channels; accepted++)
            {
                var socket = listener.Accept();
                if (accepted == 0)
                {
                    // The window opens at the first connection, not while waiting for the sender to start.
                    cpu0 = ProcessStats.CpuNow();
                    t0 = Stopwatch.GetTimestamp();
                }

                ReceiveExactly(socket, header);
                int index = BinaryPrimitives.ReadInt32LittleEndian(header);
                int count = BinaryPrimitives.ReadInt32LittleEndian(header[4..]);
                if (count != channels || index < 0 || index >= channels || sockets[index] is not null)
                {
                    throw new InvalidDataException($"a connection said channel {index} of {count}; " +
                        $"this receiver expects {channels} channels, each once");
                }

                sockets[index] = socket;
            }

            RunEach(channels, "floor-receive", i =>
            {
                try
                {
                    var (first, pages) = Range(ram.PageCount, channels, i);
                    long total = pages << PageGeometry.PageShift;
                    for (long done = 0; done < total;)
                    {
                        // Up to 1 MiB from where the last receive stopped (which may be inside a page).
                        long pfn = first + (done >> PageGeometry.PageShift);
                        int n = (int)Math.Min(ChunkBytes / PageGeometry.PageSize, first + pages - pfn);
                        var span = ram.Pages(pfn, n)[(int)(done & (PageGeometry.PageSize - 1))..];
                        int got = sockets[i]!.Receive(span);
                        if (got == 0)
                        {
                            throw new EndOfStreamException($"channel {i} closed {total - done} bytes early");
                        }

                        done += got;
                    }
                }
                catch (Exception ex) when (ex is SocketException or IOException)
                {
                    errors[i] = $"channel {i}: {ex.Message}";
                }
            });
            double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            double cpu = ProcessStats.CpuNow() - cpu0;
            foreach (var socket in sockets)
            {
                socket!.Send([1]); // the acknowledgement: this channel's pages are all in RAM
            }

            string? error = errors.FirstOrDefault(e => e is not null);
            return Report(output, new FloorSide(FloorSide.ReceiverRole, channels, ram.SizeBytes, seconds, cpu,
                error is null ? Digest(ram) : null, error));
        }
        catch (Exception ex) when (ex is SocketException or IOException or InvalidDataException)
        {
            return Report(output, new FloorSide(FloorSide.ReceiverRole, channels, ram.SizeBytes, 0, 0, null,
                ex.Message));
        }
        finally
        {
            foreach (var socket in sockets)
            {
                socket?.Dispose();
            }
        }
    }

    public static int Send(int port, long ramBytes, int channels, TimeSpan timeout, TextWriter output)
    {
        using var watchdog = Watchdog(timeout, "floor-send", output);
        using var ram = GuestRam.Allocate(ramBytes);
        Fill(ram);
        var sockets = new Socket[channels];
        var errors = new string?[channels];
        double cpu0 = ProcessStats.CpuNow();
        long t0 = Stopwatch.GetTimestamp();
        try
        {
            Span<byte> header = stackalloc byte[HeaderBytes];
            for (int i = 0; i < channels; i++)
            {
                sockets[i] = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                sockets[i].Connect(new IPEndPoint(IPAddress.Loopback, port));
                BinaryPrimitives.WriteInt32LittleEndian(header, i);
                BinaryPrimitives.WriteInt32LittleEndian(header[4..], channels);
                sockets[i].Send(header);
            }

            RunEach(channels, "floor-send", i =>
            {
                try
                {
                    var (first, pages) = Range(ram.PageCount, channels, i);
                    for (long done = 0; done < pages;)
                    {
                        int n = (int)Math.Min(ChunkBytes / PageGeometry.PageSize, pages - done);
                        sockets[i].Send(ram.Pages(first + done, n)); // blocks until the kernel took all of it
                        done += n;
                    }

                    Span<byte> ack = stackalloc byte[1];
                    ReceiveExactly(sockets[i], ack);
                }
                catch (Exception ex) when (ex is SocketException or IOException)
                {
                    errors[i] = $"channel {i}: {ex.Message}";
                }
            });
            double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            double cpu = ProcessStats.CpuNow() - cpu0;
            string? error = errors.FirstOrDefault(e => e is not null);
            return Report(output, new FloorSide(FloorSide.SenderRole, channels, ram.SizeBytes, seconds, cpu,
                error is null ? Digest(ram) : null, error));
        }
        catch (SocketException ex)
        {
            return Report(output, new FloorSide(FloorSide.SenderRole, channels, ram.SizeBytes, 0, 0, null,
                ex.Message));
        }
        finally
        {
            foreach (var socket in sockets)
            {
                socket?.Dispose();
            }
        }
    }

    /// <summary>Channel <paramref name="index"/>'s pages: the first and how many.</summary>
    public static (long First, long Pages) Range(long pageCount, int channels, int index)
    {
        long per = (pageCount + channels - 1) / channels;
        long first = Math.Min(pageCount, per * index);
        return (first, Math.Min(pageCount, first + per) - first);
    }

    /// <summary>
    /// One digest of the whole of RAM: the product's page digests (each page's XxHash64 seeded with its number, no
    /// page left out), hashed together.
    /// </summary>
    public static string Digest(GuestRam ram)
    {
        var pages = PageDigests.Compute(ram, new PageBitmap(ram.PageCount));
        return XxHash64.HashToUInt64(MemoryMarshal.AsBytes(pages.AsSpan())).ToString("x16");
    }

    /// <summary>Random bytes in every page, so nothing on the way could compress or skip any of it.</summary>
    private static void Fill(GuestRam ram)
    {
        const int pagesPerPart = 4096; // 16 MiB
        long parts = (ram.PageCount + pagesPerPart - 1) / pagesPerPart;
        Parallel.For(0, parts, p =>
        {
            long first = p * pagesPerPart;
            Random.Shared.NextBytes(ram.Pages(first, (int)Math.Min(pagesPerPart, ram.PageCount - first)));
        });
    }

    /// <summary>Runs <paramref name="body"/> for each channel on a thread of its own, until all have ended.</summary>
    private static void RunEach(int channels, string name, Action<int> body)
    {
        var threads = new Thread[channels];
        for (int i = 0; i < channels; i++)
        {
            int index = i;
            threads[i] = new Thread(() => body(index)) { IsBackground = true, Name = $"{name}-{index}" };
            threads[i].Start();
        }

        foreach (var thread in threads)
        {
            thread.Join();
        }
    }

    private static void ReceiveExactly(Socket socket, Span<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            int got = socket.Receive(buffer);
            if (got == 0)
            {
                throw new EndOfStreamException($"the connection closed {buffer.Length} bytes early");
            }

            buffer = buffer[got..];
        }
    }

    private static int Report(TextWriter output, FloorSide side)
    {
        output.WriteLine(side.ToLine());
        output.Flush();
        return side.Error is null ? 0 : 1;
    }

    private static Timer Watchdog(TimeSpan timeout, string name, TextWriter output) => new(_ =>
    {
        output.WriteLine($"{name}: no result after {timeout.TotalSeconds:F0} s; giving up");
        output.Flush();
        Environment.Exit(3);
    }, null, timeout, Timeout.InfiniteTimeSpan);
}

/// <summary>What one process of the floor measured, as it prints it (one line: a prefix, then JSON).</summary>
internal sealed record FloorSide(string Role, int Channels, long Bytes, double Seconds, double CpuSeconds,
    string? Digest, string? Error)
{
    public const string SenderRole = "sender";
    public const string ReceiverRole = "receiver";

    /// <summary>The receiver's first line: this, then the port it listens on.</summary>
    public const string ListeningPrefix = "floor: listening on port ";

    /// <summary>Each process's last line: this, then the JSON of its figures.</summary>
    public const string ResultPrefix = "floor: result ";

    private static readonly JsonSerializerOptions LineJson = new(JsonSerializerDefaults.Web);

    public string ToLine() => ResultPrefix + JsonSerializer.Serialize(this, LineJson);

    /// <summary>The figures in a result line, or null when the line is not one (or does not parse).</summary>
    public static FloorSide? Parse(string line)
    {
        ArgumentNullException.ThrowIfNull(line);
        if (!line.StartsWith(ResultPrefix, StringComparison.Ordinal))
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize<FloorSide>(line[ResultPrefix.Length..], LineJson);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>The port in the receiver's first line, or null.</summary>
    public static int? ParsePort(string line) =>
        line is not null && line.StartsWith(ListeningPrefix, StringComparison.Ordinal)
            && int.TryParse(line.AsSpan(ListeningPrefix.Length), out int port) && port is > 0 and < 65536
            ? port
            : null;
}
