using System.Globalization;
using System.Text.RegularExpressions;

namespace Migration.Shared;

/// <summary>
/// Parses sizes ("1GiB", "512M", "4096") and rates ("10Gbit", "1.25GB/s", "100MiB/s") from the command line.
/// </summary>
public static partial class Units
{
    [GeneratedRegex(@"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*(/s)?\s*$")]
    private static partial Regex Quantity();

    /// <summary>
    /// Bytes; binary and decimal suffixes (K, KiB, KB, M, MiB, MB, G, GiB, GB). Bare suffix letters are binary.
    /// </summary>
    public static long ParseBytes(string text)
    {
        var m = Quantity().Match(text ?? string.Empty);
        if (!m.Success || m.Groups[3].Success)
        {
            throw new FormatException($"'{text}' is not a size (examples: 1GiB, 512MiB, 4G).");
        }

        double value = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        double multiplier = m.Groups[2].Value.ToUpperInvariant() switch
        {
            "" or "B" => 1,
            "K" or "KIB" => 1L << 10,
            "M" or "MIB" => 1L << 20,
            "G" or "GIB" => 1L << 30,
            "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            _ => throw new FormatException($"'{text}': unknown size unit '{m.Groups[2].Value}'."),
        };
        return checked((long)(value * multiplier));
    }

    /// <summary>Bytes per second; "bit" units are bits per second (10Gbit = 1.25e9 bytes/s).</summary>
    public static double ParseRate(string text)
    {
        var m = Quantity().Match(text ?? string.Empty);
        if (!m.Success)
        {
            throw new FormatException($"'{text}' is not a rate (examples: 10Gbit, 1.25GB/s, 100MiB/s).");
        }

        double value = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        double bytesPerSecond = m.Groups[2].Value.ToUpperInvariant() switch
        {
            "" or "B" => value,
            "KBIT" => value * 1e3 / 8,
            "MBIT" => value * 1e6 / 8,
            "GBIT" => value * 1e9 / 8,
            "KB" => value * 1e3,
            "MB" => value * 1e6,
            "GB" => value * 1e9,
            "KIB" or "K" => value * (1L << 10),
            "MIB" or "M" => value * (1L << 20),
            "GIB" or "G" => value * (1L << 30),
            _ => throw new FormatException($"'{text}': unknown rate unit '{m.Groups[2].Value}'."),
        };
        if (bytesPerSecond <= 0)
        {
            throw new FormatException($"'{text}': a rate must be positive.");
        }

        return bytesPerSecond;
    }

    /// <summary>
    /// A size the way <see cref="ParseBytes"/> reads it back: the largest binary unit it divides exactly.
    /// </summary>
    public static string FormatBytes(long bytes) => bytes switch
    {
        0 => "0",
        _ when bytes % (1L << 30) == 0 => $"{bytes >> 30}GiB",
        _ when bytes % (1L << 20) == 0 => $"{bytes >> 20}MiB",
        _ when bytes % (1L << 10) == 0 => $"{bytes >> 10}KiB",
        _ => bytes.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>
    /// A rate the way <see cref="ParseRate"/> reads it back (binary units when exact, else bytes per second).
    /// </summary>
    public static string FormatRate(double bytesPerSecond) =>
        bytesPerSecond == Math.Floor(bytesPerSecond) && bytesPerSecond < long.MaxValue
            ? FormatBytes((long)bytesPerSecond) + "/s"
            : string.Create(CultureInfo.InvariantCulture, $"{bytesPerSecond:R}/s");
}
