using System.Globalization;
using System.Text.Json;
using Google.Protobuf;
using Grpc.Core;
using Migration.Protocol;
using Migration.Shared.Machine;
using Migration.Shared.Reporting;
using Migration.Shared.Transport;
using Migration.Source.Cli;
using ProtocolClient = Migration.Protocol.Migration.MigrationClient;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Bad input against a real target process: a clear gRPC status, and the target stays up for the next migration.
/// </summary>
public sealed class TargetProtocolTests : IAsyncLifetime
{
    private TargetProcess _target = null!;
    private Grpc.Net.Client.GrpcChannel _channel = null!;
    private ProtocolClient _client = null!;
    // the protobuf-generated client: proves the hand-written codecs speak plain PageBatch
    private PageStream.PageStreamClient _pages = null!;

    public async Task InitializeAsync()
    {
        _target = await TargetProcess.StartAsync([], TimeSpan.FromSeconds(60));
        _channel = ControlChannel.Create(_target.Address, TransportSecurity.None);
        _client = new ProtocolClient(_channel);
        _pages = new PageStream.PageStreamClient(_channel);
    }

    public async Task DisposeAsync()
    {
        _channel.Dispose();
        await _target.DisposeAsync();
    }

    private static BeginRequest Begin(string id, long ramBytes = 16L << 20)
    {
        var config = new GuestConfig { RamBytes = ramBytes, Vcpus = 1 };
        return new BeginRequest
        {
            MigrationId = id,
            RamBytes = (ulong)ramBytes,
            PageSize = 4096,
            Vcpus = 1,
            GuestConfigJson = JsonSerializer.Serialize(config, MigrationReport.JsonOptions),
        };
    }

    private readonly Dictionary<string, string> _keys = [];

    /// <summary>Begins as a source does, keeping the migration's key for the calls that follow.</summary>
    private async Task<BeginReply> BeginAsync(BeginRequest request)
    {
        var reply = await _client.BeginAsync(request);
        _keys[request.MigrationId] = reply.MigrationKey;
        return reply;
    }

    private Metadata Headers(string id, bool includeId = false)
    {
        var headers = new Metadata();
        if (_keys.TryGetValue(id, out string? key))
        {
            headers.Add("migration-key", key);
        }

        if (includeId)
        {
            headers.Add("migration-id", id);
        }

        return headers;
    }

    private async Task<RpcException> SendAsync(string id, PageBatch batch)
    {
        using var call = _pages.SendPages(Headers(id, includeId: true));
        return await Assert.ThrowsAsync<RpcException>(async () =>
        {
            await call.RequestStream.WriteAsync(batch);
            await call.RequestStream.CompleteAsync();
            await call.ResponseAsync;
        });
    }

    private static PageBatch Batch(ulong pfn, PageEncoding encoding, byte[] payload) => new()
    {
        Round = 0,
        Pfns = { pfn },
        Encodings = { encoding },
        Lengths = { (uint)payload.Length },
        Payload = ByteString.CopyFrom(payload),
    };

    private async Task AssertTargetAcceptsANewMigration()
    {
        string id = Guid.NewGuid().ToString("n");
        await BeginAsync(Begin(id));
        var cancel = await _client.CancelAsync(new CancelRequest { MigrationId = id, Reason = "test" }, Headers(id));
        Assert.True(cancel.Cancelled);
    }

    [Fact]
    public async Task PagesBeforeBegin_AreRejected()
    {
        var ex = await SendAsync("nobody", Batch(0, PageEncoding.Zero, []));
        Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);
        Assert.Contains("Begin", ex.Status.Detail, StringComparison.Ordinal);
        await AssertTargetAcceptsANewMigration();
    }

    [Theory]
    [InlineData(4096UL, 1, 4096, "outside guest RAM")]
    [InlineData(5UL, 1, 100, "raw page has 100 bytes")]
    [InlineData(5UL, 2, 64, "LZ4 payload is corrupt")]
    [InlineData(5UL, 0, 10, "zero page carries 10 payload bytes")]
    public async Task BadPage_FailsTheMigrationWithInvalidArgument(ulong pfn, int encoding, int payloadBytes,
        string expected)
    {
        string id = Guid.NewGuid().ToString("n");
        await BeginAsync(Begin(id));
        var payload = new byte[payloadBytes];
        new Random(1).NextBytes(payload);

        var ex = await SendAsync(id, Batch(pfn, (PageEncoding)encoding, payload));

        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Contains(expected, ex.Status.Detail, StringComparison.Ordinal);
        var status = await _client.StatusAsync(new StatusRequest());
        Assert.Equal("failed", status.State);
        await AssertTargetAcceptsANewMigration();
    }

    [Fact]
    public async Task MismatchedFraming_IsRejected()
    {
        string id = Guid.NewGuid().ToString("n");
        await BeginAsync(Begin(id));
        var batch = Batch(1, PageEncoding.Raw, new byte[4096]);
        batch.Lengths.Add(5);
        var ex = await SendAsync(id, batch);
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        await AssertTargetAcceptsANewMigration();
    }

    [Fact]
    public async Task SecondConcurrentMigration_IsRefused()
    {
        string first = Guid.NewGuid().ToString("n");
        await BeginAsync(Begin(first));
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await _client.BeginAsync(Begin("second")));
        Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);
        Assert.Contains("busy", ex.Status.Detail, StringComparison.Ordinal);
        Assert.DoesNotContain(first, ex.Status.Detail, StringComparison.Ordinal); // another client never learns the id
        await _client.CancelAsync(new CancelRequest { MigrationId = first, Reason = "test" }, Headers(first));
        await AssertTargetAcceptsANewMigration();
    }

    [Fact]
    public async Task GeometryItCannotHost_IsRejected()
    {
        var tooBig = Begin("big", 2L << 40);
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await _client.BeginAsync(tooBig));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Contains("between", ex.Status.Detail, StringComparison.Ordinal);

        var badPage = Begin("page");
        badPage.PageSize = 65536;
        Assert.Equal(StatusCode.InvalidArgument,
            (await Assert.ThrowsAsync<RpcException>(async () => await _client.BeginAsync(badPage))).StatusCode);
        await AssertTargetAcceptsANewMigration();
    }

    [Fact]
    public async Task CompleteBeforeBegin_AndAfterCompletion_AreRejected()
    {
        var ex = await Assert.ThrowsAsync<RpcException>(
            async () => await _client.CompleteAsync(new CompleteRequest { MigrationId = "x" }));
        Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);

        // A completion with wrong digests: verification fails, the guest is not resumed, the target takes the next one.
        string id = Guid.NewGuid().ToString("n");
        await BeginAsync(Begin(id));
        var reply = await _client.CompleteAsync(new CompleteRequest { MigrationId = id, DigestPages = 0 }, Headers(id));
        Assert.False(reply.Verified);
        Assert.False(reply.Resumed);
        Assert.NotEmpty(reply.Error);
        var again = await Assert.ThrowsAsync<RpcException>(
            async () => await _client.CompleteAsync(new CompleteRequest { MigrationId = id }, Headers(id)));
        Assert.Equal(StatusCode.FailedPrecondition, again.StatusCode);
        await AssertTargetAcceptsANewMigration();
    }

    [Fact]
    public async Task AnOversizedBatch_FailsTheMigrationWithResourceExhausted()
    {
        string id = Guid.NewGuid().ToString("n");
        await BeginAsync(Begin(id));
        // 9 MiB of raw pages in one message: over the page stream's 8 MiB limit.
        var batch = new PageBatch { Payload = ByteString.CopyFrom(new byte[9 << 20]) };
        for (int i = 0; i < (9 << 20) / 4096; i++)
        {
            batch.Pfns.Add((ulong)i % 4096);
            batch.Encodings.Add(PageEncoding.Raw);
            batch.Lengths.Add(4096);
        }

        var ex = await SendAsync(id, batch);

        // The status reaches the client unless its own write of the rest is reset first; the target's record says why.
        Assert.Contains(ex.StatusCode, new[] { StatusCode.ResourceExhausted, StatusCode.Cancelled });
        var status = await _client.StatusAsync(new StatusRequest { MigrationId = id }, Headers(id));
        Assert.Equal((MigrationOutcome.Discarded, "failed"), (status.Outcome, status.State));
        Assert.Contains("exceeds the limit", status.Error, StringComparison.Ordinal);
        await AssertTargetAcceptsANewMigration();
    }

    [Fact]
    public async Task AStreamThatEndsInsideAMessage_FailsTheMigration()
    {
        string id = Guid.NewGuid().ToString("n");
        await BeginAsync(Begin(id));
        using var http = new HttpClient(new SocketsHttpHandler());
        var path = new Uri(_target.Address, "/migration.v1.PageStream/SendPages");
        using var request = new HttpRequestMessage(HttpMethod.Post, path)
        {
            Version = System.Net.HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            // A gRPC frame header announcing 100 bytes, followed by 3.
            Content = new ByteArrayContent([0, 0, 0, 0, 100, 1, 2, 3]),
        };
        request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/grpc");
        request.Headers.Add("migration-id", id);
        request.Headers.Add("migration-key", _keys[id]);
        using var response = await http.SendAsync(request);
        await response.Content.ReadAsByteArrayAsync();

        string grpcStatus = response.TrailingHeaders.TryGetValues("grpc-status", out var t)
            ? t.First()
            : response.Headers.GetValues("grpc-status").First();
        Assert.Equal(((int)StatusCode.InvalidArgument).ToString(CultureInfo.InvariantCulture), grpcStatus);
        Assert.Equal("failed", (await _client.StatusAsync(new StatusRequest())).State);
        await AssertTargetAcceptsANewMigration();
    }
}
