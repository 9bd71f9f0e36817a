using System.Text.Json;
using Google.Protobuf;
using Grpc.Core;
using Migration.Protocol;
using Migration.Shared.Balloon;
using Migration.Shared.Machine;
using Migration.Shared.Transport;
using Migration.Shared.Verification;
using Migration.Source.Cli;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// The whole VM is verified, not only its pages: one byte changed on the way in the vCPU state, the device state or
/// the configuration the target was begun with, while every page arrives intact, and the target refuses to resume.
/// The untouched control resumes, so the refusals are the digest's doing.
/// </summary>
public sealed class StateTamperingTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    [Theory]
    [InlineData("nothing")]
    [InlineData("vcpu")]
    [InlineData("device")]
    [InlineData("config")]
    public async Task OneByteChangedInTheState_IsCaughtBeforeResume(string tampered)
    {
        using var vm = VirtualMachine.Boot(new GuestConfig { RamBytes = 16L << 20, Vcpus = 2 });
        await using var target = await TargetProcess.StartAsync([], Limit);
        using var channel = ControlChannel.Create(target.Address, TransportSecurity.None);
        var client = new Protocol.Migration.MigrationClient(channel);
        string id = Guid.NewGuid().ToString("n");
        string configJson = JsonSerializer.Serialize(vm.Config, WireJson.Default.GuestConfig);
        // What the target is begun with: the source's configuration, or one with a byte changed in transit (the
        // seed, so it still parses and passes every range check).
        string received = tampered == "config"
            ? configJson.Replace($"\"seed\":{vm.Config.Workload.Seed}", $"\"seed\":{vm.Config.Workload.Seed + 1}",
                StringComparison.Ordinal)
            : configJson;
        Assert.NotEqual(tampered == "config", received == configJson);
        var begun = await client.BeginAsync(HandDrivenSource.Begin(vm, id, received));
        var headers = new Metadata { { "migration-id", id }, { "migration-key", begun.MigrationKey } };
        await HandDrivenSource.SendAllPagesAsync(channel, headers, vm.Ram, round: 1);

        var devices = vm.SaveDevices();
        byte[][] vcpus = [.. vm.SaveVcpuStates()];
        ulong digest = HandDrivenSource.StateDigest(configJson, vcpus, devices);
        ulong[] pages = PageDigests.Compute(vm.Ram, vm.Kernel.FreePageMap());
        var complete = new CompleteRequest
        {
            MigrationId = id,
            PageDigests = ByteString.CopyFrom(PageDigests.ToBytes(pages)),
            DigestPages = (ulong)pages.Length,
            FinalRound = 2,
            StateDigest = digest,
        };
        if (tampered == "vcpu")
        {
            vcpus[1][vcpus[1].Length / 2] ^= 0x01; // one bit of the second vCPU's state, after the source hashed it
        }
        else if (tampered == "device")
        {
            // Still a valid balloon section, its command id in range: only the digest can tell.
            var balloon = BalloonSection.Load(devices[0], vm.Ram.PageCount);
            devices = [BalloonSection.Save(balloon with { HintCommandId = balloon.HintCommandId ^ 0x100 })];
        }

        HandDrivenSource.AddState(complete, vcpus, devices);
        var reply = await client.CompleteAsync(complete, new Metadata { { "migration-key", begun.MigrationKey } });

        if (tampered == "nothing")
        {
            Assert.True(reply.Resumed, reply.Error);
            Assert.True(reply.Verified, reply.Error);
            return;
        }

        Assert.False(reply.Resumed);
        Assert.Contains("state digest", reply.Error, StringComparison.Ordinal);
        Assert.Equal(0ul, reply.MismatchedPages); // every page was intact: the state alone was refused
        Assert.Equal("failed", await target.WaitForStateAsync(Limit, "failed"));
    }
}
