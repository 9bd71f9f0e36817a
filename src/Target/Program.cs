using System.CommandLine;
using Google.Protobuf;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Migration.Protocol;
using Migration.Shared;
using Migration.Shared.Guest;
using Migration.Shared.Verification;
using Migration.Target;
using Migration.Target.Receiving;
using Migration.Target.Services;

var listen = new Option<string>("--listen") { Description = "URL to listen on (http://HOST:PORT; port 0 picks a free one)", DefaultValueFactory = _ => "http://127.0.0.1:50051" };
var once = new Option<bool>("--once") { Description = "Exit after the first migration ends" };
var report = new Option<string?>("--report") { Description = "Write a JSON report of the migration to FILE" };
var dumpRam = new Option<string?>("--dump-ram") { Description = "Write the received RAM image to FILE at switchover, before the vCPUs resume" };
var runAfter = new Option<double?>("--run-after") { Description = "Let the resumed guest run SECONDS, then stop it and run its self-check" };
var prealloc = new Option<string?>("--prealloc") { Description = "Map and back this much guest RAM (e.g. 8GiB) before listening, like QEMU's -mem-prealloc; used by a migration of exactly that size" };
var verify = new Option<string>("--verify") { Description = "Switchover digests: incremental (taken as pages arrive) or full (rehash all in-use RAM)", DefaultValueFactory = _ => "incremental" };
var root = new RootCommand("Live-migration target: receives a guest over gRPC, verifies it and resumes it.") { listen, once, report, dumpRam, runAfter, prealloc, verify };
root.SetAction(parse =>
{
    string url = parse.GetValue(listen)!;
    if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme != Uri.UriSchemeHttp)
    {
        Console.Error.WriteLine($"error: --listen must be an http:// URL with host and port, got '{url}'");
        return 2;
    }

    double? seconds = parse.GetValue(runAfter);
    if (seconds is < 0 or > 86400)
    {
        Console.Error.WriteLine("error: --run-after must be between 0 and 86400 seconds");
        return 2;
    }

    long? preallocBytes = null;
    if (parse.GetValue(prealloc) is string size)
    {
        try
        {
            preallocBytes = Units.ParseBytes(size);
            PageGeometry.ValidateRamBytes(preallocBytes.Value);
        }
        catch (Exception ex) when (ex is FormatException or ArgumentException or OverflowException)
        {
            Console.Error.WriteLine($"error: --prealloc: {ex.Message}");
            return 2;
        }
    }

    string verifyMode = parse.GetValue(verify)!;
    if (verifyMode is not ("incremental" or "full"))
    {
        Console.Error.WriteLine($"error: --verify must be incremental or full, got '{verifyMode}'");
        return 2;
    }

    var options = new TargetOptions
    {
        FullRehash = verifyMode == "full",
        PreallocBytes = preallocBytes,
        Listen = url,
        Once = parse.GetValue(once),
        ReportPath = parse.GetValue(report),
        DumpRamPath = parse.GetValue(dumpRam),
        RunAfterSeconds = seconds,
    };
    return RunServer(options);
});

return root.Parse(args).Invoke();

static int RunServer(TargetOptions options)
{
    var builder = WebApplication.CreateSlimBuilder();
    builder.Logging.SetMinimumLevel(LogLevel.Information);
    builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
    builder.Logging.AddFilter("Grpc", LogLevel.Warning);
    builder.WebHost.UseUrls(options.Listen);
    builder.WebHost.ConfigureKestrel(kestrel =>
    {
        kestrel.ConfigureEndpointDefaults(endpoint => endpoint.Protocols = HttpProtocols.Http2); // gRPC over cleartext HTTP/2
        var http2 = kestrel.Limits.Http2;
        // Bulk transfer: the defaults (1 MiB connection / 768 KiB stream windows) stall a multi-GiB/s stream on round
        // trips. 32 MiB / 16 MiB keep a few batches in flight per channel.
        http2.InitialConnectionWindowSize = 32 << 20;
        http2.InitialStreamWindowSize = 16 << 20;
        // Larger frames mean fewer frame headers and fewer reads per batch; 1 MiB of the 16 MiB the protocol allows.
        http2.MaxFrameSize = 1 << 20;
        kestrel.Limits.MaxRequestBodySize = null; // streams are long; gRPC enforces per-message limits
    });
    // Receive straight into a buffer rather than waiting for data first (one system call per read instead of two), into
    // 64 KiB pool blocks rather than 4 KiB (see LargeBlockMemoryPool): 820-860 -> 1340-1510 MB/s on a raw page stream.
    builder.WebHost.UseSockets(sockets => sockets.WaitForDataBeforeAllocatingBuffer = false);
    builder.Services.AddSingleton<IMemoryPoolFactory<byte>, LargeBlockMemoryPoolFactory>();
    builder.Services.AddSingleton(options);
    builder.Services.AddSingleton<MigrationHost>();
    builder.Services.AddGrpc(grpc =>
    {
        grpc.MaxReceiveMessageSize = options.MaxMessageBytes;
        grpc.EnableDetailedErrors = true;
    });
    builder.Services.AddGrpcHealthChecks();
    builder.Services.AddGrpcReflection();

    var app = builder.Build();
    _ = app.Services.GetRequiredService<MigrationHost>(); // now, not at the first call: --prealloc happens before listening
    SwitchoverWarmup.Run(); // the first switchover then runs optimised code (see SwitchoverWarmup)
    WarmMessages();
    app.MapGrpcService<MigrationService>();
    app.MapGrpcService<PageStreamService>();
    app.MapGrpcHealthChecksService();
    app.MapGrpcReflectionService();
    app.Lifetime.ApplicationStarted.Register(() =>
    {
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
        // Parents (the demo, the tests) wait for this exact line to learn the port.
        Console.WriteLine($"target listening on {string.Join(' ', addresses)}");
    });

    try
    {
        app.Run();
    }
    catch (IOException ex)
    {
        Console.Error.WriteLine($"error: cannot listen on {options.Listen}: {ex.Message}");
        return 1;
    }

    return 0;
}

// The control messages' protobuf code, compiled before any migration: Begin and Complete are each parsed once per
// process, and with tiering off their first parse is a full compile inside setup or the downtime.
static void WarmMessages()
{
    var complete = new CompleteRequest
    {
        MigrationId = "warm-up",
        Device = new DeviceState(),
        PageDigests = ByteString.CopyFrom(new byte[4096]),
        DigestPages = 512,
    };
    complete.VcpuStates.Add(ByteString.CopyFrom(new byte[64]));
    _ = CompleteRequest.Parser.ParseFrom(complete.ToByteArray());
    var reply = new CompleteReply { Verified = true, GuestSelfCheck = "ok" };
    reply.PhasesMs["warm"] = 1;
    reply.FirstMismatches.Add(1);
    _ = CompleteReply.Parser.ParseFrom(reply.ToByteArray());
    _ = BeginRequest.Parser.ParseFrom(new BeginRequest { MigrationId = "warm-up", GuestConfigJson = "{}" }.ToByteArray());
}
