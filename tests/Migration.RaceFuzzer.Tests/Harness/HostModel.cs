namespace Migration.RaceFuzzer.Tests.Harness;

/// <summary>
/// How the host runs QEMU's threads in one seed, drawn from a stream of its own (independent of the guest's draws).
/// </summary>
/// <param name="StopLatency">
/// Scheduling points a stop takes between the request and the vCPUs being parked, while the guest runs on. Real stops
/// are not instant: QEMU's completion takes its locks and kicks every vCPU out of the guest, which notices at its next
/// exit. A few points on half the seeds, up to a few hundred on the others (a busy host, long guest stretches).
/// </param>
/// <param name="HintThreadStarvedByGuest">
/// Whether the hint thread's long descheduling is the guest's vCPU threads holding the host CPUs, so it ends shortly
/// after they park for the stop (after <paramref name="WakeDelay"/> steps), rather than unrelated load.
/// </param>
/// <param name="HintBurst">
/// Buffers the hint thread drains per step once it has a CPU to itself (the vCPUs parked): QEMU's hint thread pops
/// buffers in a loop while any are queued, each in microseconds, while a send batch costs a network round.
/// </param>
internal sealed record HostModel(int StopLatency, bool HintThreadStarvedByGuest, int WakeDelay, int HintBurst)
{
    public static HostModel Draw(Random host, int queueCapacity)
    {
        int stopLatency = host.Next(2) == 0 ? host.Next(2, 16) : host.Next(16, 300);
        bool starved = host.Next(4) != 0;
        int wakeDelay = host.Next(10);
        int burst = host.Next(1, queueCapacity + 1);
        return new HostModel(stopLatency, starved, wakeDelay, burst);
    }
}
