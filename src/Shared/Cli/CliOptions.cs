using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace Migration.Shared.Cli;

/// <summary>A switch's value on the command line.</summary>
public enum OnOff
{
    Off,
    On,
}

/// <summary>A byte size on the command line ("1GiB"); prints the way it parses.</summary>
public readonly record struct ByteSize(long Bytes)
{
    public override string ToString() => Units.FormatBytes(Bytes);
}

/// <summary>A rate on the command line ("100MiB/s", "10Gbit"); prints the way it parses.</summary>
public readonly record struct ByteRate(double BytesPerSecond)
{
    public override string ToString() => Units.FormatRate(BytesPerSecond);
}

/// <summary>
/// Typed options with their parsing in one place: names (never numbers) for choices, on/off switches, finite numbers
/// within bounds, sizes and rates with units. A bad value is a parse error naming the option, which the program turns
/// into a usage error (exit code 2). Defaults are passed in from the option records, never written here.
/// </summary>
public static class CliOptions
{
    /// <summary>One of the enum's names, lower case, case-insensitive; numbers are refused.</summary>
    public static Option<T> Choice<T>(string name, string description, T defaultValue)
        where T : struct, Enum
    {
        string names = string.Join(" | ", Enum.GetNames<T>().Select(n => n.ToLowerInvariant()));
        return new Option<T>(name)
        {
            Description = $"{description}: {names}",
            DefaultValueFactory = _ => defaultValue,
            CustomParser = result =>
            {
                string text = Single(result);
                if (TryParseName<T>(text, out var value))
                {
                    return value;
                }

                result.AddError($"{name} must be one of {names}; got '{text}'.");
                return defaultValue;
            },
        };
    }

    /// <summary>
    /// Exactly one of the enum's names, in any case: never a number, a list ("none,lz4", which
    /// <see cref="Enum.TryParse{TEnum}(string, bool, out TEnum)"/> combines as flags) or padding. The command line's
    /// choices and the management API's named fields parse with it.
    /// </summary>
    public static bool TryParseName<T>(string? text, out T value)
        where T : struct, Enum
    {
        foreach (string name in Enum.GetNames<T>())
        {
            if (string.Equals(name, text, StringComparison.OrdinalIgnoreCase))
            {
                value = Enum.Parse<T>(name);
                return true;
            }
        }

        value = default;
        return false;
    }

    /// <summary>
    /// on | off. (An enum, not a bool: the parser takes a bool option's value only if it reads "true" or "false".)
    /// </summary>
    public static Option<OnOff> Switch(string name, string description, bool defaultValue) =>
        Choice(name, description, defaultValue ? OnOff.On : OnOff.Off);

    /// <summary>A finite number in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static Option<double> Number(string name, string description, double defaultValue, double min,
        double max) => new(name)
        {
            Description = description,
            DefaultValueFactory = _ => defaultValue,
            CustomParser = result =>
            {
                string text = Single(result);
                if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value)
                    && double.IsFinite(value) && value >= min && value <= max)
                {
                    return value;
                }

                result.AddError(string.Create(CultureInfo.InvariantCulture,
                    $"{name} must be a number from {min} to {max}; got '{text}'."));
                return defaultValue;
            },
        };

    /// <summary>A whole number in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static Option<int> WholeNumber(string name, string description, int defaultValue, int min, int max) =>
        new(name)
        {
            Description = description,
            DefaultValueFactory = _ => defaultValue,
            CustomParser = result =>
            {
                string text = Single(result);
                if (int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value)
                    && value >= min && value <= max)
                {
                    return value;
                }

                result.AddError($"{name} must be a whole number from {min} to {max}; got '{text}'.");
                return defaultValue;
            },
        };

    /// <summary>A seed: any unsigned 64-bit number.</summary>
    public static Option<ulong> Seed(string name, string description, ulong defaultValue) => new(name)
    {
        Description = description,
        DefaultValueFactory = _ => defaultValue,
        CustomParser = result =>
        {
            string text = Single(result);
            if (ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong value))
            {
                return value;
            }

            result.AddError($"{name} must be a whole number from 0 to {ulong.MaxValue}; got '{text}'.");
            return defaultValue;
        },
    };

    /// <summary>A size with a unit (1GiB, 512MiB, 4G).</summary>
    public static Option<ByteSize> Size(string name, string description, long defaultBytes) => new(name)
    {
        Description = description,
        DefaultValueFactory = _ => new ByteSize(defaultBytes),
        CustomParser = result =>
        {
            string text = Single(result);
            try
            {
                return new ByteSize(Units.ParseBytes(text));
            }
            catch (Exception ex) when (ex is FormatException or OverflowException)
            {
                result.AddError($"{name}: {ex.Message}");
                return new ByteSize(defaultBytes);
            }
        },
    };

    /// <summary>A rate with a unit (10Gbit, 1.25GB/s, 100MiB/s); no default means none (null).</summary>
    public static Option<ByteRate?> Rate(string name, string description, double? defaultBytesPerSecond) => new(name)
    {
        Description = description,
        DefaultValueFactory = _ => defaultBytesPerSecond is double d ? new ByteRate(d) : null,
        CustomParser = result =>
        {
            string text = Single(result);
            try
            {
                double rate = Units.ParseRate(text);
                if (double.IsFinite(rate))
                {
                    return new ByteRate(rate);
                }

                result.AddError($"{name}: '{text}' is too large.");
            }
            catch (FormatException ex)
            {
                result.AddError($"{name}: {ex.Message}");
            }

            return null;
        },
    };

    /// <summary>A page-poisoning byte (0..255 or 0x00..0xff) or off.</summary>
    public static Option<byte?> Poison(string name, string description, byte? defaultValue) => new(name)
    {
        Description = $"{description} (default {(defaultValue is byte b ? $"0x{b:x2}" : "off")})",
        DefaultValueFactory = _ => defaultValue,
        CustomParser = result =>
        {
            string text = Single(result);
            if (text.Equals("off", StringComparison.OrdinalIgnoreCase))
            {
                return null;
            }

            bool hex = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase);
            if (byte.TryParse(hex ? text[2..] : text, hex ? NumberStyles.AllowHexSpecifier : NumberStyles.None,
                CultureInfo.InvariantCulture, out byte value))
            {
                return value;
            }

            result.AddError($"{name} must be a byte (0..255 or 0x00..0xff) or off; got '{text}'.");
            return defaultValue;
        },
    };

    private static string Single(ArgumentResult result) =>
        result.Tokens.Count > 0 ? result.Tokens[^1].Value : string.Empty;
}
