using System.CommandLine;
using Migration.Shared.Cli;
using Migration.Source.Transport;

namespace Migration.Source.Cli;

/// <summary>
/// How the source proves itself to a peer and trusts it (a shared token, the CA, a client certificate): the flags
/// `migrate` and `run` take for the target, and `ctl` for the API it calls.
/// </summary>
internal sealed class SecurityOptions
{
    public SecurityOptions(string peer, bool recursive = false)
    {
        Token = new Option<string?>("--token-file")
        {
            Description = $"Send this shared token (the file's content) to the {peer}",
            Recursive = recursive,
        };
        Ca = new Option<string?>("--tls-ca")
        {
            Description = $"CA (PEM) the {peer}'s certificate must chain to",
            Recursive = recursive,
        };
        ClientCert = new Option<string?>("--tls-client-cert")
        {
            Description = "Client certificate (PEM) for mutual TLS",
            Recursive = recursive,
        };
        ClientKey = new Option<string?>("--tls-client-key")
        {
            Description = "The client certificate's key (PEM)",
            Recursive = recursive,
        };
    }

    public Option<string?> Token { get; }

    public Option<string?> Ca { get; }

    public Option<string?> ClientCert { get; }

    public Option<string?> ClientKey { get; }

    public IEnumerable<Option> All => [Token, Ca, ClientCert, ClientKey];

    /// <summary>The parsed flags; throws <see cref="ArgumentException"/> for a missing file or a lone half.</summary>
    public TransportSecurity Bind(ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(parse);
        string? cert = parse.GetValue(ClientCert);
        string? key = parse.GetValue(ClientKey);
        if ((cert is null) != (key is null))
        {
            throw new ArgumentException("--tls-client-cert and --tls-client-key go together.");
        }

        return new TransportSecurity
        {
            Token = parse.GetValue(Token) is string file ? CliFiles.ReadToken(file, "--token-file") : null,
            CaPath = parse.GetValue(Ca) is string caPath ? CliFiles.Readable(caPath, "--tls-ca") : null,
            ClientCertificatePath = cert is null ? null : CliFiles.Readable(cert, "--tls-client-cert"),
            ClientKeyPath = key is null ? null : CliFiles.Readable(key, "--tls-client-key"),
        };
    }
}
