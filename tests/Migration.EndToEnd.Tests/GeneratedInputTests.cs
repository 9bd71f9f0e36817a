using System.Globalization;
using System.Text.Json;
using Google.Protobuf;
using Grpc.Core;
using K4os.Compression.LZ4;
using Migration.Protocol;
using Migration.Shared.Guest.Workloads;
using Migration.Shared.Machine;
using Migration.Shared.Precopy;
using Migration.Shared.Protocol;
using Migration.Shared.Reporting;
using Migration.Shared.Transport;
using Migration.Source.Cli;
using Xunit.Abstractions;
using ProtocolClient = Migration.Protocol.Migration.MigrationClient;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Thousands of generated bad inputs against one real target: random bytes, truncated and bit-flipped valid messages,
/// lying lengths, huge counts, absurd geometry, garbage state at completion, strangers' keys. Every answer is a typed
/// status (never Unknown, never a hang), the target stays up, and afterwards a real migration verifies. The seed is
/// printed; <c>INPUT_SEED</c> replays it and <c>INPUT_COUNT</c> runs more (a benchmark-sized run: 100000).
/// </summary>
public sealed class GeneratedInputTests(ITestOutputHelper output) : IAsyncLifetime
{
    private static readonly StatusCode[] Typed =
    [
        StatusCode.OK, StatusCode.InvalidArgument, StatusCode.FailedPrecondition, StatusCode.AlreadyExists,
        StatusCode.ResourceExhausted, StatusCode.Unauthenticated, StatusCode.Unimplemented,
        StatusCode.Cancelled, // a stream the client gave up on after the target answered
    ];

    private TargetProcess _target = null!;
    private Grpc.Net.Client.GrpcChannel _channel = null!;
    private ProtocolClient _client = null!;
    private PageStream.PageStreamClient _pages = null!;
    private CallInvoker _raw = null!;

    public async Task InitializeAsync()
    {
        _target = await TargetProcess.StartAsync(["--lease-seconds", "30"], TimeSpan.FromSeconds(60));
        _channel = ControlChannel.Create(_target.Address, TransportSecurity.None);
        _client = new ProtocolClient(_channel);
        _pages = new PageStream.PageStreamClient(_channel);
        _raw = _channel.CreateCallInvoker();
    }

    public async Task DisposeAsync()
    {
        _channel.Dispose();
        await _target.DisposeAsync();
    }

    [Fact]
    public async Task ThousandsOfBadInputs_GetTypedStatuses_AndACleanMigrationFollows()
    {
        static string? Env(string name) => Environment.GetEnvironmentVariable(name);
        int seed = int.TryParse(Env("INPUT_SEED"), CultureInfo.InvariantCulture, out int s)
            ? s
            : 20261202;
        int count = int.TryParse(Env("INPUT_COUNT"), CultureInfo.InvariantCulture, out int n)
            ? n
            : 1500; // the suite's share of its 6 minutes; INPUT_COUNT=20000 for a longer hunt
        var random = new Random(seed);
        var seen = new Dictionary<StatusCode, int>();
        for (int i = 0; i < count; i++)
        {
            int kind = random.Next(Kinds.Length);
            string where = $"input {i} ({Kinds[kind]}, seed {seed}) [replay: INPUT_SEED={seed} INPUT_COUNT={i + 1}]";
            StatusCode code = StatusCode.OK;
            try
            {
                await OneAsync(random, kind, i);
            }
            catch (RpcException ex)
            {
                Assert.True(Typed.Contains(ex.StatusCode), $"{where} got {ex.StatusCode}: {ex.Status.Detail}");
                code = ex.StatusCode;
            }

            seen[code] = seen.GetValueOrDefault(code) + 1;
            var after = await _client.StatusAsync(new StatusRequest());
            Assert.True(after.State is not ("receiving" or "verifying"), $"{where} left the target {after.State}");
        }

        output.WriteLine($"seed {seed}: {count} inputs; " + string.Join(", ", seen.Select(p => $"{p.Key} {p.Value}")));
        Assert.False(_target.HasExited);

        // The target is whole: a real migration into it verifies.
        var status = await _client.StatusAsync(new StatusRequest());
        Assert.True(status.State is not ("receiving" or "verifying"), status.State);
        using var vm = VirtualMachine.Boot(new GuestConfig
        {
            RamBytes = 16L << 20,
            Vcpus = 1,
            Workload = new WorkloadOptions { Kind = WorkloadKind.Churn, Seed = 4, ChurnPagesPerSecond = 5000 },
        });
        vm.Start();
        var report = await new PrecopyEngine(vm, MigrationOptions.Defaults with { Target = _target.Address })
            .MigrateAsync().WaitAsync(TimeSpan.FromSeconds(120));
        Assert.True(report is { Status: MigrationStatus.Completed, Verified: true }, report.Error);
    }

    private static readonly string[] Kinds =
    [
        "random bytes to a control call", "bit-flipped Begin", "absurd Begin", "bad page batch",
        "random bytes on a page stream", "garbage Complete", "a stranger's calls", "status with an odd id",
        "LZ4 bomb", "truncated or bit-flipped valid batch",
    ];

    /// <summary>One generated input; throws the RpcException the target answered with, if any.</summary>
    private async Task OneAsync(Random random, int kind, int i)
    {
        string id = $"gen-{i}";
        switch (kind)
        {
            case 0:
                await RawAsync("migration.v1.Migration", random.Next(4) switch
                {
                    0 => "Begin",
                    1 => "Complete",
                    2 => "Cancel",
                    _ => "Status",
                }, Garbage(random));
                return;
            case 1:
                await RawAsync("migration.v1.Migration", "Begin", Flip(random, ValidBegin(id).ToByteArray()));
                return;
            case 2:
                await BeginThenEndAsync(AbsurdBegin(random, id));
                return;
            case 3:
                {
                    var begun = await _client.BeginAsync(ValidBegin(id));
                    await DiscardedAfterAsync(id, begun.MigrationKey,
                        SendPagesAsync(id, begun.MigrationKey, BadBatch(random)));
                    return;
                }

            case 4:
                {
                    var begun = await _client.BeginAsync(ValidBegin(id));
                    await DiscardedAfterAsync(id, begun.MigrationKey,
                        SendRawPagesAsync(id, begun.MigrationKey, Garbage(random)));
                    return;
                }

            case 5:
                {
                    var begun = await _client.BeginAsync(ValidBegin(id));
                    var reply = await _client.CompleteAsync(GarbageComplete(random, id), Key(begun.MigrationKey));
                    Assert.False(reply.Verified, $"garbage completion {i} verified");
                    return;
                }

            case 6:
                {
                    var begun = await _client.BeginAsync(ValidBegin(id));
                    string stolen = random.Next(2) == 0
                        ? Convert.ToHexStringLower(random.GetItems<byte>(KeyBytes, 16))
                        : "";
                    var cancel = await _client.CancelAsync(new CancelRequest { MigrationId = id }, Key(stolen));
                    Assert.False(cancel.Cancelled, "a stranger cancelled a migration");
                    var asked = await _client.StatusAsync(new StatusRequest { MigrationId = id }, Key(stolen));
                    Assert.Equal(MigrationOutcome.Unknown, asked.Outcome);
                    await _client.CancelAsync(new CancelRequest { MigrationId = id }, Key(begun.MigrationKey));
                    return;
                }

            case 8:
                {
                    var begun = await _client.BeginAsync(ValidBegin(id));
                    await DiscardedAfterAsync(id, begun.MigrationKey,
                        SendPagesAsync(id, begun.MigrationKey, Lz4Bomb(random)));
                    return;
                }

            case 9:
                {
                    var begun = await _client.BeginAsync(ValidBegin(id));
                    await DiscardedAfterAsync(id, begun.MigrationKey,
                        SendRawPagesAsync(id, begun.MigrationKey, Flip(random, ValidBatch(random).ToByteArray())));
                    return;
                }

            default:
                string odd = Garbage(random).Length.ToString(CultureInfo.InvariantCulture) + "\u0000x";
                await _client.StatusAsync(new StatusRequest { MigrationId = odd });
                return;
        }
    }

    private static readonly byte[] KeyBytes = [1, 2, 3];

    private static Metadata Key(string key) =>
        string.IsNullOrEmpty(key) ? [] : new Metadata { { "migration-key", key } };

    /// <summary>Ends a generated Begin the target took (a harmless change), so the next input finds it free.</summary>
    private async Task BeginThenEndAsync(BeginRequest request)
    {
        var begun = await _client.BeginAsync(request);
        await _client.CancelAsync(new CancelRequest { MigrationId = request.MigrationId }, Key(begun.MigrationKey));
    }

    /// <summary>
    /// A stream the target rejected discards its migration (the partial guest is gone); one it took (the generator
    /// made a valid batch) is ended here, so the next input finds the target free. Rethrows the rejection.
    /// </summary>
    private async Task DiscardedAfterAsync(string id, string key, Task stream)
    {
        try
        {
            await stream;
        }
        catch (RpcException)
        {
            var status = await _client.StatusAsync(new StatusRequest { MigrationId = id }, Key(key));
            Assert.Equal(MigrationOutcome.Discarded, status.Outcome);
            throw;
        }

        await _client.CancelAsync(new CancelRequest { MigrationId = id }, Key(key));
    }

    private async Task SendPagesAsync(string id, string key, PageBatch batch)
    {
        using var call = _pages.SendPages(new Metadata { { "migration-id", id }, { "migration-key", key } });
        try
        {
            await call.RequestStream.WriteAsync(batch);
            await call.RequestStream.CompleteAsync();
        }
        catch (RpcException)
        {
            // the target already answered; its status is what counts
        }
        catch (InvalidOperationException)
        {
        }

        await call.ResponseAsync;
    }

    private async Task SendRawPagesAsync(string id, string key, byte[] message)
    {
        var method = new Method<byte[], byte[]>(MethodType.ClientStreaming, "migration.v1.PageStream", "SendPages",
            Bytes, Bytes);
        using var call = _raw.AsyncClientStreamingCall(method, null,
            new CallOptions(new Metadata { { "migration-id", id }, { "migration-key", key } }));
        try
        {
            await call.RequestStream.WriteAsync(message);
            await call.RequestStream.CompleteAsync();
        }
        catch (RpcException)
        {
        }
        catch (InvalidOperationException)
        {
        }

        await call.ResponseAsync;
    }

    private async Task RawAsync(string service, string name, byte[] message)
    {
        var method = new Method<byte[], byte[]>(MethodType.Unary, service, name, Bytes, Bytes);
        var deadline = new CallOptions(deadline: DateTime.UtcNow.AddSeconds(10));
        byte[] reply = await _raw.AsyncUnaryCall(method, null, deadline, message);
        if (name == "Begin")
        {
            // A flip the target could not tell from a real request (in the id, say): end the migration it began.
            var begun = BeginReply.Parser.ParseFrom(reply);
            var request = BeginRequest.Parser.ParseFrom(message);
            await _client.CancelAsync(new CancelRequest { MigrationId = request.MigrationId }, Key(begun.MigrationKey));
        }

        var status = await _client.StatusAsync(new StatusRequest());
        Assert.True(status.State != "receiving", $"random bytes to {name} left a migration receiving");
    }

    private static readonly Marshaller<byte[]> Bytes = Marshallers.Create(b => b, b => b);

    private static BeginRequest ValidBegin(string id)
    {
        var config = new GuestConfig { RamBytes = 8L << 20, Vcpus = 1 };
        return new BeginRequest
        {
            MigrationId = id,
            RamBytes = (ulong)config.RamBytes,
            PageSize = 4096,
            Vcpus = 1,
            GuestConfigJson = JsonSerializer.Serialize(config, MigrationReport.JsonOptions),
        };
    }

    private static BeginRequest AbsurdBegin(Random random, string id)
    {
        var request = ValidBegin(id);
        switch (random.Next(7))
        {
            case 0: request.RamBytes = (ulong)random.NextInt64(); break;
            case 1: request.Vcpus = (uint)random.Next(); break;
            case 2: request.PageSize = (uint)random.Next(); break;
            case 3:
                request.GuestConfigJson = request.GuestConfigJson[..random.Next(request.GuestConfigJson.Length)];
                break;
            case 4:
                request.GuestConfigJson = request.GuestConfigJson.Replace("\"vcpus\":1", "\"vcpus\":" + random.Next(),
                    StringComparison.Ordinal)
                    .Replace("eager", random.Next(2) == 0 ? "7" : "lazy", StringComparison.Ordinal);
                break;
            case 5: request.MigrationId = new string('x', random.Next(60, 300)); break;
            default: request.GuestConfigJson = "{\"ramBytes\":" + random.NextInt64() + ",\"vcpus\":1}"; break;
        }

        return request;
    }

    private static PageBatch BadBatch(Random random)
    {
        var batch = new PageBatch { Round = (uint)random.Next(3) };
        int pages = random.Next(1, 8);
        var payload = new byte[random.Next(0, 9000)];
        random.NextBytes(payload);
        for (int i = 0; i < pages; i++)
        {
            batch.Pfns.Add(random.Next(4) == 0 ? (ulong)random.NextInt64() : (ulong)random.Next(2048));
            batch.Encodings.Add((PageEncoding)random.Next(4));
            batch.Lengths.Add(random.Next(3) == 0 ? (uint)random.Next() : (uint)random.Next(5000));
        }

        if (random.Next(4) == 0)
        {
            batch.Lengths.Add(1); // counts that disagree
        }

        batch.Payload = ByteString.CopyFrom(payload);
        return batch;
    }

    /// <summary>A batch of a few real pages (raw, zero and LZ4) the target would take as it is.</summary>
    private static PageBatch ValidBatch(Random random)
    {
        var batch = new PageBatch { Round = 0 };
        var payload = new List<byte>();
        var page = new byte[4096];
        var block = new byte[LZ4Codec.MaximumOutputSize(page.Length)];
        for (int i = random.Next(1, 4); i > 0; i--)
        {
            batch.Pfns.Add((ulong)random.Next(2048));
            random.NextBytes(page.AsSpan(0, random.Next(64, 4096)));
            switch (random.Next(3))
            {
                case 0:
                    batch.Encodings.Add(PageEncoding.Zero);
                    batch.Lengths.Add(0);
                    break;
                case 1:
                    batch.Encodings.Add(PageEncoding.Raw);
                    batch.Lengths.Add(4096);
                    payload.AddRange(page);
                    break;
                default:
                    int n = LZ4Codec.Encode(page, block);
                    batch.Encodings.Add(PageEncoding.Lz4);
                    batch.Lengths.Add((uint)n);
                    payload.AddRange(block.AsSpan(0, n));
                    break;
            }
        }

        batch.Payload = ByteString.CopyFrom([.. payload]);
        return batch;
    }

    /// <summary>An LZ4 block that claims one page but expands far beyond it, or to less than a page.</summary>
    private static PageBatch Lz4Bomb(Random random)
    {
        var plain = new byte[random.Next(2) == 0 ? 1 << 20 : random.Next(1, 4095)];
        var block = new byte[LZ4Codec.MaximumOutputSize(plain.Length)];
        int n = LZ4Codec.Encode(plain, block);
        var batch = new PageBatch { Round = 0, Payload = ByteString.CopyFrom(block, 0, n) };
        batch.Pfns.Add((ulong)random.Next(2048));
        batch.Encodings.Add(PageEncoding.Lz4);
        batch.Lengths.Add((uint)n);
        return batch;
    }

    private static CompleteRequest GarbageComplete(Random random, string id)
    {
        var request = new CompleteRequest
        {
            MigrationId = id,
            DigestPages = (ulong)random.Next(100),
            PageDigests = ByteString.CopyFrom(Garbage(random)),
            StateDigest = (ulong)random.NextInt64(),
            Device = random.Next(2) == 0
                ? null
                : new DeviceState { HintStatus = (uint)random.Next(), Features = (ulong)random.Next() },
        };
        for (int v = random.Next(3); v > 0; v--)
        {
            request.VcpuStates.Add(ByteString.CopyFrom(Garbage(random)));
        }

        return request;
    }

    private static byte[] Garbage(Random random)
    {
        var bytes = new byte[random.Next(0, 600)];
        random.NextBytes(bytes);
        return bytes;
    }

    private static byte[] Flip(Random random, byte[] message)
    {
        int flips = random.Next(1, 4);
        for (int i = 0; i < flips && message.Length > 0; i++)
        {
            message[random.Next(message.Length)] ^= (byte)(1 << random.Next(8));
        }

        return random.Next(3) == 0 ? message[..random.Next(message.Length + 1)] : message;
    }
}
