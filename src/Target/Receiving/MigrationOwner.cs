using System.Security.Cryptography;
using System.Text;

namespace Migration.Target.Receiving;

/// <summary>
/// Who may act on a migration: the caller that began it. Begin hands out a random key, which every later call about
/// the migration carries; with mutual TLS the client certificate must be the same one too. Another client, even an
/// authenticated one, cannot stream into, complete, cancel or query someone else's migration.
/// </summary>
internal sealed record MigrationOwner(string Key, string? CertificateThumbprint)
{
    /// <summary>
    /// A new owner with the key the source proposed (see <see cref="KeyProblem"/>), or with a fresh 128-bit one.
    /// </summary>
    public static MigrationOwner New(string? certificateThumbprint, string? proposedKey = null) =>
        new(string.IsNullOrEmpty(proposedKey) ? Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16))
            : proposedKey, certificateThumbprint);

    /// <summary>Null when <paramref name="key"/> is empty or 32 lower-case hex digits, else what is wrong.</summary>
    public static string? KeyProblem(string key) =>
        key.Length == 0 || (key.Length == 32 && key.All(c => c is >= '0' and <= '9' or >= 'a' and <= 'f'))
            ? null
            : $"migration_key must be 32 lower-case hex digits (128 random bits), not {key.Length} characters";

    /// <summary>Whether the caller presents this owner's key (compared in constant time) and certificate.</summary>
    public bool Admits(CallerCredentials caller) =>
        caller.Key is { } key
        && CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(key), Encoding.ASCII.GetBytes(Key))
        && string.Equals(caller.CertificateThumbprint, CertificateThumbprint, StringComparison.Ordinal);
}

/// <summary>What a call presents: the migration key header and, with mutual TLS, the client certificate.</summary>
internal readonly record struct CallerCredentials(string? Key, string? CertificateThumbprint)
{
    public static CallerCredentials Of(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return Of(context.Request.Headers[Shared.Protocol.WireNames.MigrationKeyHeader],
            context.Connection.ClientCertificate?.Thumbprint);
    }

    /// <summary>From the migration key header's value (null or empty: none) and the client certificate's thumbprint.</summary>
    public static CallerCredentials Of(string? key, string? certificateThumbprint) =>
        new(string.IsNullOrEmpty(key) ? null : key, certificateThumbprint);
}
