using System.CommandLine;
using Migration.Shared;
using Migration.Shared.Cli;
using Migration.Shared.Guest;

namespace Migration.Bench.Floor;

/// <summary>
/// The floor's two processes as hidden subcommands of the bench (the bench starts them; they are not in its help):
/// <c>floor-receive --ram SIZE --channels N</c> prints the port it listens on, <c>floor-send --port P --ram SIZE
/// --channels N</c> connects to it. Each prints one result line (<see cref="FloorSide"/>) and exits 0 when its side
/// finished.
/// </summary>
internal static class FloorCommands
{
    /// <summary>Smallest and largest guest RAM the floor takes.</summary>
    public const long MinRamBytes = 16L << 20, MaxRamBytes = 1L << 40;

    public static Command Receive()
    {
        var (ram, channels, timeout) = Common();
        var command = new Command("floor-receive", "The floor's receiving process (started by the bench).")
        {
            ram, channels, timeout,
        };
        command.Hidden = true;
        command.SetAction(parse => FloorProgram.Receive(parse.GetValue(ram).Bytes, parse.GetValue(channels),
            TimeSpan.FromSeconds(parse.GetValue(timeout)), Console.Out));
        return command;
    }

    public static Command Send()
    {
        var (ram, channels, timeout) = Common();
        var port = CliOptions.WholeNumber("--port", "The receiver's port on 127.0.0.1", 0, 1, 65535);
        port.Required = true;
        var command = new Command("floor-send", "The floor's sending process (started by the bench).")
        {
            port, ram, channels, timeout,
        };
        command.Hidden = true;
        command.SetAction(parse => FloorProgram.Send(parse.GetValue(port), parse.GetValue(ram).Bytes,
            parse.GetValue(channels), TimeSpan.FromSeconds(parse.GetValue(timeout)), Console.Out));
        return command;
    }

    /// <summary>
    /// <c>--floor-ram</c>: null when not given, else the bytes, or why they will not do (a whole number of pages
    /// from 16 MiB to 1 TiB).
    /// </summary>
    public static (long? Bytes, string? Error) ParseRam(string? text)
    {
        if (text is null)
        {
            return (null, null);
        }

        long bytes;
        try
        {
            bytes = Units.ParseBytes(text);
        }
        catch (Exception ex) when (ex is FormatException or OverflowException)
        {
            return (null, $"--floor-ram: {ex.Message}");
        }

        return bytes is < MinRamBytes or > MaxRamBytes || bytes % PageGeometry.PageSize != 0
            ? (null, $"--floor-ram must be a whole number of 4 KiB pages from 16MiB to 1TiB; got '{text}'")
            : (bytes, null);
    }

    private static (Option<ByteSize> Ram, Option<int> Channels, Option<int> Timeout) Common() =>
        (CliOptions.Size("--ram", "Guest RAM to move", 1L << 30),
        CliOptions.WholeNumber("--channels", "TCP connections", 1, 1, 64),
        CliOptions.WholeNumber("--timeout-seconds", "Give up (exit 3) after this long", 180, 1, 86_400));
}
