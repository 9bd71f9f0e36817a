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
    /// <summary>A new owner with a fresh 128-bit key.</summary>
    public static MigrationOwner New(string? certificateThumbprint) =>
        new(Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16)), certificateThumbprint);

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
        string? key = context.Request.Headers[Shared.Protocol.WireNames.MigrationKeyHeader];
        return new CallerCredentials(string.IsNullOrEmpty(key) ? null : key,
            context.Connection.ClientCertificate?.Thumbprint);
    }
}
