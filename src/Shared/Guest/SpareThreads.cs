using System.Collections.Concurrent;

namespace Migration.Shared.Guest;

/// <summary>
/// OS threads started ahead of need, each waiting for the one guest thread it will run. Starting an OS thread is not
/// free: the starter waits until the new thread runs, which on a loaded machine takes milliseconds a thread. A target
/// reserves as many as the guest it receives will run (<see cref="Reserve"/>, while the pages arrive), so the
/// switchover's resume hands each its loop (a signal) instead of starting threads inside the downtime, as a VMM's
/// vCPU threads exist before the guest resumes.
/// </summary>
/// <remarks>A spare runs one loop and ends with it; spares nobody took wait for the next guest.</remarks>
internal static class SpareThreads
{
    /// <summary>The most spares kept waiting, whatever is asked: a guest of more threads starts the rest itself.</summary>
    private const int Most = 64;

    private static readonly ConcurrentQueue<Spare> Waiting = new();

    /// <summary>Spares waiting now.</summary>
    public static int Count => Waiting.Count;

    /// <summary>Starts spares until <paramref name="count"/> (at most 64) wait.</summary>
    public static void Reserve(int count)
    {
        for (int i = Waiting.Count; i < Math.Min(count, Most); i++)
        {
            Waiting.Enqueue(new Spare());
        }
    }

    /// <summary>
    /// Runs <paramref name="loop"/> on a spare named <paramref name="name"/>, or on a new thread when none waits;
    /// returns what waits for the loop to end.
    /// </summary>
    public static Action Run(string name, Action loop)
    {
        if (Waiting.TryDequeue(out var spare))
        {
            return spare.Run(name, loop);
        }

        var thread = new Thread(() => loop()) { IsBackground = true, Name = name };
        thread.Start();
        return thread.Join;
    }

    private sealed class Spare
    {
        private readonly object _gate = new();
        private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private string? _name;
        private Action? _loop;

        public Spare()
        {
            new Thread(Body) { IsBackground = true }.Start();
        }

        public Action Run(string name, Action loop)
        {
            lock (_gate)
            {
                (_name, _loop) = (name, loop);
                Monitor.Pulse(_gate);
            }

            return _ended.Task.Wait;
        }

        private void Body()
        {
            Action loop;
            lock (_gate)
            {
                while (_loop is null)
                {
                    Monitor.Wait(_gate);
                }

                loop = _loop;
            }

            Thread.CurrentThread.Name = _name;
            try
            {
                loop();
            }
            finally
            {
                _ended.SetResult();
            }
        }
    }
}
