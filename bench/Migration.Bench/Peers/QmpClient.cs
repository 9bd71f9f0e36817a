using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Migration.Bench.Peers;

/// <summary>
/// A QEMU Machine Protocol client over QEMU's unix socket (<c>-qmp unix:PATH,server=on,wait=off</c>): one JSON object
/// per line; the greeting, <c>qmp_capabilities</c>, then commands answered by <c>return</c> or <c>error</c>, with
/// asynchronous events (STOP, RESUME, MIGRATION) in between, which are kept with QEMU's timestamps.
/// </summary>
internal sealed class QmpClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly StreamReader _reader;
    private readonly StreamWriter _writer;

    private QmpClient(Socket socket)
    {
        _socket = socket;
        var stream = new NetworkStream(socket, ownsSocket: false);
        _reader = new StreamReader(stream, Encoding.UTF8);
        _writer = new StreamWriter(stream, new UTF8Encoding(false)) { AutoFlush = true, NewLine = "\n" };
    }

    /// <summary>Events seen so far: name and QEMU's timestamp (seconds since the epoch).</summary>
    public List<(string Name, double Timestamp)> Events { get; } = [];

    /// <summary>Connects (retrying while QEMU starts up) and negotiates capabilities.</summary>
    public static async Task<QmpClient> ConnectAsync(string path, TimeSpan timeout, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), ct);
                var client = new QmpClient(socket);
                _ = await client.ReadAsync(ct); // the greeting
                await client.ExecuteAsync("qmp_capabilities", null, ct);
                return client;
            }
            catch (SocketException) when (DateTime.UtcNow < deadline)
            {
                socket.Dispose();
                await Task.Delay(50, ct);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }
    }

    /// <summary>Runs a command; returns its <c>return</c> value, or throws with QEMU's error text.</summary>
    public async Task<JsonNode?> ExecuteAsync(string command, JsonObject? arguments, CancellationToken ct)
    {
        var message = new JsonObject { ["execute"] = command };
        if (arguments is not null)
        {
            message["arguments"] = arguments;
        }

        await _writer.WriteLineAsync(message.ToJsonString().AsMemory(), ct);
        while (true)
        {
            var reply = await ReadAsync(ct);
            if (reply["event"] is JsonNode name)
            {
                Events.Add((name.GetValue<string>(), Timestamp(reply)));
                continue;
            }

            if (reply["error"] is JsonNode error)
            {
                throw new InvalidOperationException($"QMP {command}: {error["desc"] ?? error}");
            }

            return reply["return"];
        }
    }

    public async ValueTask DisposeAsync()
    {
        _reader.Dispose();
        await _writer.DisposeAsync();
        _socket.Dispose();
    }

    private async Task<JsonObject> ReadAsync(CancellationToken ct)
    {
        string line = await _reader.ReadLineAsync(ct)
            ?? throw new IOException("QEMU closed its QMP connection");
        return JsonNode.Parse(line) as JsonObject ?? throw new JsonException($"QMP sent {line}");
    }

    private static double Timestamp(JsonObject e) => e["timestamp"] is JsonObject t
        ? t["seconds"]!.GetValue<long>() + (t["microseconds"]!.GetValue<long>() / 1e6)
        : double.NaN;
}
