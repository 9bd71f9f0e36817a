using System.CommandLine;
using Migration.Shared.Transport;

namespace Migration.Shared.Cli;

/// <summary>
/// How a process proves itself to a peer it calls and trusts it (a shared token, the CA, a client certificate): the
/// flags the source's `migrate` and `run` take for the target, `ctl` for the API it calls, and the target's
/// `--onward-*` for the next target it migrates a guest to.
/// </summary>
internal sealed class SecurityOptions
{
    /// <param name="prefix">Put before each flag's name: "--token-file" becomes "--{prefix}token-file".</param>
    /// <param name="allowTargets">
    /// Add <c>--{prefix}allow-target</c>: the peers a migration started through the management API may go to (for a
    /// process that serves that API and migrates: <c>run</c>, a target).
    /// </param>
    public SecurityOptions(string peer, bool recursive = false, string prefix = "", bool allowTargets = false)
    {
        _prefix = "--" + prefix;
        if (allowTargets)
        {
            AllowTarget = new Option<string[]>($"--{prefix}allow-target")
            {
                Description = $"A {peer} a migration started through the management API may go to (URL; repeat " +
                    "for more). With a token or client certificate to present, only these; without, any unless some " +
                    "are given",
                Recursive = recursive,
                AllowMultipleArgumentsPerToken = false,
                Arity = ArgumentArity.OneOrMore,
            };
        }

        Token = new Option<string?>($"--{prefix}token-file")
        {
            Description = $"Send this shared token (the file's content) to the {peer}",
            Recursive = recursive,
        };
        Ca = new Option<string?>($"--{prefix}tls-ca")
        {
            Description = $"CA (PEM) the {peer}'s certificate must chain to",
            Recursive = recursive,
        };
        ClientCert = new Option<string?>($"--{prefix}tls-client-cert")
        {
            Description = "Client certificate (PEM) for mutual TLS",
            Recursive = recursive,
        };
        ClientKey = new Option<string?>($"--{prefix}tls-client-key")
        {
            Description = "The client certificate's key (PEM)",
            Recursive = recursive,
        };
    }

    private readonly string _prefix;

    public Option<string?> Token { get; }

    /// <summary><c>--allow-target</c>, when this command has it.</summary>
    public Option<string[]>? AllowTarget { get; }

    public Option<string?> Ca { get; }

    public Option<string?> ClientCert { get; }

    public Option<string?> ClientKey { get; }

    public IEnumerable<Option> All => AllowTarget is null
        ? [Token, Ca, ClientCert, ClientKey]
        : [Token, Ca, ClientCert, ClientKey, AllowTarget];

    /// <summary>The parsed flags; throws <see cref="ArgumentException"/> for a missing file or a lone half.</summary>
    public TransportSecurity Bind(ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(parse);
        string? cert = parse.GetValue(ClientCert);
        string? key = parse.GetValue(ClientKey);
        if ((cert is null) != (key is null))
        {
            throw new ArgumentException($"{ClientCert.Name} and {ClientKey.Name} go together.");
        }

        var security = new TransportSecurity
        {
            Token = parse.GetValue(Token) is string file ? CliFiles.ReadToken(file, Token.Name) : null,
            CaPath = parse.GetValue(Ca) is string caPath ? CliFiles.Readable(caPath, Ca.Name) : null,
            ClientCertificatePath = cert is null ? null : CliFiles.Readable(cert, ClientCert.Name),
            ClientKeyPath = key is null ? null : CliFiles.Readable(key, ClientKey.Name),
            FlagPrefix = _prefix,
        };
        return AllowTarget is null ? security : security with { AllowedTargets = AllowedTargets(parse, security) };
    }

    /// <summary>
    /// The <c>--allow-target</c> URLs; one the token could never go to (in clear beyond loopback) is an error.
    /// </summary>
    private List<Uri> AllowedTargets(ParseResult parse, TransportSecurity security)
    {
        var allowed = new List<Uri>();
        foreach (string url in parse.GetValue(AllowTarget!) ?? [])
        {
            if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https")
                || uri.Host.Length == 0)
            {
                throw new ArgumentException($"{AllowTarget!.Name} '{url}' is not an http:// or https:// URL.");
            }

            if (security.CleartextProblem(uri, AllowTarget!.Name) is { } problem)
            {
                throw new ArgumentException(problem + ".");
            }

            allowed.Add(uri);
        }

        return allowed;
    }
}
