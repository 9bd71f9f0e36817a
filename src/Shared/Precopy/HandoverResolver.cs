using Migration.Protocol;
using Migration.Shared.Transport;

namespace Migration.Shared.Precopy;

/// <summary>What the source knows for certain after a handover whose Complete answer it did not get.</summary>
internal abstract record HandoverOutcome
{
    /// <summary>The target resumed the guest: the source's copy must never run again.</summary>
    public sealed record TargetResumed(string How) : HandoverOutcome;

    /// <summary>The target did not and will not resume it: the source may resume its guest.</summary>
    public sealed record TargetWillNotResume(string Why) : HandoverOutcome;

    /// <summary>No definite answer in the window: the source must stay paused and say so.</summary>
    public sealed record Unknown(string Why) : HandoverOutcome;
}

/// <summary>
/// The handover's confirm step (libvirt's "confirm", QEMU's rule that a source whose outcome is unknown stays paused).
/// After a lost or late Complete answer it asks the target, by migration id and with the migration's key, what it
/// decided: the target records that before it acts on it. Receiving means the completion never arrived, so a Cancel
/// settles it; verifying means ask again (resume-first, a copy waiting for a Confirm that never comes is discarded when
/// its lease runs out, which Status does not renew); resumed and discarded are final. A different target process at the address,
/// or no answer for the whole window, leaves the outcome unknown: the source never guesses.
/// </summary>
internal sealed class HandoverResolver(IMigrationTransport transport, string migrationId, string instanceId,
    TimeProvider time, TimeSpan window)
{
    /// <summary>Between two questions: quick at first, then no faster than twice a second.</summary>
    private static readonly TimeSpan RetryDelay = TimeSpan.FromMilliseconds(250);

    /// <summary>One question's deadline: an eighth of the window (0.5..5 s), so a question lost to a broken connection
    /// leaves room for several more.</summary>
    private TimeSpan QuestionTimeout =>
        TimeSpan.FromSeconds(Math.Clamp(window.TotalSeconds / 8, 0.5, 5));

    public async Task<HandoverOutcome> ResolveAsync(string cause)
    {
        long start = time.GetTimestamp();
        string lastSeen = "no answer yet";
        int questions = 0;
        while (true)
        {
            var left = window - time.GetElapsedTime(start);
            if (left <= TimeSpan.Zero)
            {
                return new HandoverOutcome.Unknown(
                    $"{cause}; asked the target {questions} time(s) over {window.TotalSeconds:F0} s without a " +
                    "definite " +
                    $"answer (last: {lastSeen})");
            }

            questions++;
            try
            {
                var status = await transport.StatusAsync(migrationId, Min(left, QuestionTimeout),
                    CancellationToken.None).ConfigureAwait(false);
                if (status.InstanceId != instanceId)
                {
                    return new HandoverOutcome.Unknown(
                        $"{cause}; a different target process now answers at that address, so the one that received " +
                        "the guest is gone and cannot say whether it resumed it");
                }

                switch (status.Outcome)
                {
                    case MigrationOutcome.Resumed:
                        return new HandoverOutcome.TargetResumed(
                            $"{cause}; the target reports it verified and resumed the guest");
                    case MigrationOutcome.Discarded:
                        return new HandoverOutcome.TargetWillNotResume(
                            $"{cause}; the target discarded the migration ({status.Error})");
                    case MigrationOutcome.Receiving:
                        if (await CancelAsync(cause).ConfigureAwait(false) is { } settled)
                        {
                            return settled;
                        }

                        lastSeen = "receiving, and the cancel did not settle it";
                        break;
                    case MigrationOutcome.Verifying:
                        lastSeen = "still verifying";
                        break;
                    default:
                        lastSeen = "the target does not know the migration";
                        break;
                }
            }
            catch (MigrationFailedException ex)
            {
                lastSeen = ex.Kind == FailureKind.Timeout ? "no answer in time" : ex.Message;
            }

            await Task.Delay(Min(RetryDelay * Math.Min(questions, 2), window - time.GetElapsedTime(start)), time)
                .ConfigureAwait(false);
        }
    }

    /// <summary>The completion never reached the target: cancelling it makes "not resumed" definite.</summary>
    private async Task<HandoverOutcome?> CancelAsync(string cause)
    {
        var reply = await transport.CancelAsync(migrationId, $"the completion did not arrive in time ({cause})")
            .ConfigureAwait(false);
        return reply?.Outcome switch
        {
            MigrationOutcome.Discarded => new HandoverOutcome.TargetWillNotResume(
                $"{cause}; the completion never reached the target, which has cancelled the migration"),
            MigrationOutcome.Resumed =>
                new HandoverOutcome.TargetResumed($"{cause}; the target reports it resumed the guest"),
            _ => null,
        };
    }

    /// <summary>The smaller of the two, never below zero.</summary>
    private static TimeSpan Min(TimeSpan a, TimeSpan b)
    {
        var smaller = a < b ? a : b;
        return smaller > TimeSpan.Zero ? smaller : TimeSpan.Zero;
    }
}
