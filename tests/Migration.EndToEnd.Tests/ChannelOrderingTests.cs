using System.Text.Json;
using Google.Protobuf;
using Grpc.Core;
using Migration.Protocol;
using Migration.Shared.Guest;
using Migration.Shared.Guest.Kernel;
using Migration.Shared.Machine;
using Migration.Shared.Reporting;
using Migration.Shared.Transport;
using Migration.Shared.Verification;
using Migration.Source.Cli;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Race R11: a page dirtied in round k and again in round k+1 travels over two different channels, and the newer copy
/// can arrive first. The target must end with the newer copy whatever the arrival order.
/// </summary>
public sealed class ChannelOrderingTests
{
    [Theory]
    [InlineData(0u, true)]  // the stale copy is from an older round: dropped, the guest verifies
    [InlineData(2u, false)] // control: the same bytes as a newer round do overwrite, and verification catches it
    public async Task OlderCopyArrivingLateOnAnotherChannel_DoesNotOverwriteTheNewerOne(uint staleRound,
        bool expectVerified)
    {
        // A real guest whose page P holds the "round 1" content.
        using var vm = VirtualMachine.Boot(new GuestConfig { RamBytes = 16L << 20, Vcpus = 1 });
        long p = vm.Kernel.Allocate(0, PageOwner.Anonymous);
        vm.Memory.FillPages(p, 1, 0x11);

        await using var target = await TargetProcess.StartAsync([], TimeSpan.FromSeconds(60));
        using var control = ControlChannel.Create(target.Address, TransportSecurity.None);
        using var channelA = ControlChannel.Create(target.Address, TransportSecurity.None);
        using var channelB = ControlChannel.Create(target.Address, TransportSecurity.None);
        var client = new Protocol.Migration.MigrationClient(control);
        string id = Guid.NewGuid().ToString("n");
        string configJson = JsonSerializer.Serialize(vm.Config, MigrationReport.JsonOptions);
        var begun = await client.BeginAsync(HandDrivenSource.Begin(vm, id, configJson));
        var headers = new Metadata { { "migration-id", id }, { "migration-key", begun.MigrationKey } };

        // Channel B delivers round 1 (every page, P with its current content) first...
        await HandDrivenSource.SendAllPagesAsync(channelB, headers, vm.Ram, round: 1);

        // ...then channel A delivers a different copy of P, tagged with staleRound.
        PageStreamSummary staleSummary;
        using (var a = new PageStream.PageStreamClient(channelA).SendPages(headers))
        {
            var stale = new byte[PageGeometry.PageSize];
            Array.Fill(stale, (byte)0x22);
            await a.RequestStream.WriteAsync(new PageBatch
            {
                Round = staleRound,
                Pfns = { (ulong)p },
                Encodings = { PageEncoding.Raw },
                Lengths = { (uint)stale.Length },
                Payload = ByteString.CopyFrom(stale),
            });
            await a.RequestStream.CompleteAsync();
            staleSummary = await a.ResponseAsync;
        }

        var free = vm.Kernel.FreePageMap();
        ulong[] digests = PageDigests.Compute(vm.Ram, free);
        var complete = new CompleteRequest
        {
            MigrationId = id,
            PageDigests = ByteString.CopyFrom(PageDigests.ToBytes(digests)),
            DigestPages = (ulong)digests.Length,
            FinalRound = 2,
        };
        var vcpus = vm.SaveVcpuStates();
        var devices = vm.SaveDevices(); // every device's section: the target rebuilds no guest without them
        complete.StateDigest = HandDrivenSource.StateDigest(configJson, vcpus, devices);
        HandDrivenSource.AddState(complete, vcpus, devices);
        var reply = await client.CompleteAsync(complete, new Metadata { { "migration-key", begun.MigrationKey } });

        Assert.Equal(expectVerified, reply.Verified);
        Assert.Equal(expectVerified ? 0ul : 1ul, reply.MismatchedPages);
        Assert.Equal(expectVerified ? 0ul : 1ul, staleSummary.PagesApplied);
        if (!expectVerified)
        {
            Assert.Equal((ulong)p, Assert.Single(reply.FirstMismatches));
        }
    }
}
