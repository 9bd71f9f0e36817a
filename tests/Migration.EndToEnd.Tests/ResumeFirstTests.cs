using System.Text.Json;
using Google.Protobuf;
using Grpc.Core;
using Migration.Protocol;
using Migration.Shared.Machine;
using Migration.Shared.Transport;
using Migration.Shared.Verification;
using Migration.Source.Cli;

namespace Migration.EndToEnd.Tests;

/// <summary>
/// Resume-first switchover against a real target process: Complete resumes the guest provisionally, and only a
/// Confirm whose digests match what arrived makes it the live copy. One digest changed in the Confirm (a page the
/// source's dirty log missed looks exactly like this to the target), or a free-page map that calls in-use pages free
/// (which pages must match is the guest's own allocator's word, not the source's), and the target discards its running
/// copy, says so to a Status by id, and takes the next migration.
/// </summary>
public sealed class ResumeFirstTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    /// <summary>How the test's Confirm lies, if it does.</summary>
    public enum Lie
    {
        None,

        /// <summary>One page's digest changed: a write the source's dirty log missed looks like this.</summary>
        OneDigestWrong,

        /// <summary>A map that calls every page free, and no digests at all.</summary>
        EveryPageFree,

        /// <summary>One in-use page called free, its digest left out.</summary>
        OneInUsePageFree,
    }

    [Theory]
    [InlineData(Lie.None)]
    [InlineData(Lie.OneDigestWrong)]
    [InlineData(Lie.EveryPageFree)]
    [InlineData(Lie.OneInUsePageFree)]
    public async Task OnlyAMatchingConfirm_MakesTheResumedGuestTheLiveCopy(Lie lie)
    {
        using var vm = VirtualMachine.Boot(new GuestConfig { RamBytes = 16L << 20, Vcpus = 2 });
        await using var target = await TargetProcess.StartAsync(["--run-after", "0.2"], Limit);
        using var channel = ControlChannel.Create(target.Address, TransportSecurity.None);
        var client = new Protocol.Migration.MigrationClient(channel);
        string id = Guid.NewGuid().ToString("n");
        string configJson = JsonSerializer.Serialize(vm.Config, WireJson.Default.GuestConfig);
        var begun = await client.BeginAsync(HandDrivenSource.Begin(vm, id, configJson));
        var key = new Metadata { { "migration-key", begun.MigrationKey } };
        var headers = new Metadata { { "migration-id", id }, { "migration-key", begun.MigrationKey } };
        await HandDrivenSource.SendAllPagesAsync(channel, headers, vm.Ram, round: 1);

        var devices = vm.SaveDevices();
        byte[][] vcpus = [.. vm.SaveVcpuStates()];
        var complete = new CompleteRequest
        {
            MigrationId = id,
            FinalRound = 2,
            ResumeFirst = true,
            StateDigest = HandDrivenSource.StateDigest(configJson, vcpus, devices),
        };
        HandDrivenSource.AddState(complete, vcpus, devices);
        var provisional = await client.CompleteAsync(complete, key);
        Assert.True(provisional.Provisional, provisional.Error);
        Assert.False(provisional.Resumed);
        var asked = await client.StatusAsync(new StatusRequest { MigrationId = id }, key);
        Assert.Equal(MigrationOutcome.Verifying, asked.Outcome);

        var free = vm.Kernel.FreePageMap();
        if (lie == Lie.EveryPageFree)
        {
            free.SetAll();
        }
        else if (lie == Lie.OneInUsePageFree)
        {
            free.Set(free.FindNextClear(1)); // a page the guest uses (its kernel's, here)
        }

        ulong[] pages = PageDigests.Compute(vm.Ram, free);
        if (lie == Lie.OneDigestWrong)
        {
            pages[pages.Length / 2] ^= 1;
        }

        var check = vm.Kernel.SelfCheck();
        var confirmed = await client.ConfirmAsync(new ConfirmRequest
        {
            MigrationId = id,
            PageDigests = ByteString.CopyFrom(PageDigests.ToBytes(pages)),
            DigestPages = (ulong)pages.Length,
            FreePages = ByteString.CopyFrom(free.ToBytes()),
            SelfCheckOk = check.Ok,
            SelfCheck = check.ToString(),
        }, key);

        var outcome = (await client.StatusAsync(new StatusRequest { MigrationId = id }, key)).Outcome;
        if (lie == Lie.None)
        {
            Assert.True(confirmed.Verified, confirmed.Error);
            Assert.True(confirmed.Resumed);
            Assert.Equal(MigrationOutcome.Resumed, outcome);
            Assert.Equal("idle", await target.WaitForStateAsync(Limit, "idle")); // ran, stopped, checked
            return;
        }

        Assert.False(confirmed.Verified);
        Assert.False(confirmed.Resumed);
        if (lie == Lie.OneDigestWrong)
        {
            Assert.Equal(1ul, confirmed.MismatchedPages);
        }
        else
        {
            Assert.Contains("disagrees with the guest's own allocator", confirmed.Error, StringComparison.Ordinal);
        }

        Assert.Equal(MigrationOutcome.Discarded, outcome);
        Assert.Equal("failed", await target.WaitForStateAsync(Limit, "failed"));
        var next = await client.BeginAsync(HandDrivenSource.Begin(vm, Guid.NewGuid().ToString("n"), configJson));
        Assert.NotEmpty(next.MigrationKey);
    }
}
