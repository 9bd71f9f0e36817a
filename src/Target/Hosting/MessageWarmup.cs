using Google.Protobuf;
using Migration.Protocol;

namespace Migration.Target.Hosting;

/// <summary>
/// The control messages' protobuf code, compiled before any migration: Begin and Complete are each parsed once per
/// process, and with tiered compilation off their first parse is a full compile inside setup or the downtime.
/// </summary>
internal static class MessageWarmup
{
    public static void Run()
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
        _ = BeginRequest.Parser.ParseFrom(
            new BeginRequest { MigrationId = "warm-up", GuestConfigJson = "{}" }.ToByteArray());
    }
}
