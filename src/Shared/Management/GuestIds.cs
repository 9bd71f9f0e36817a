using System.Runtime.CompilerServices;
using Grpc.Core;
using Migration.Shared.Hosting;
using Migration.Shared.Machine;

namespace Migration.Management;

/// <summary>
/// The guests a process has run, by id: each <see cref="VirtualMachine"/> it runs is one guest with its own random id
/// (a VM that leaves and comes back is a new guest), and the ids of those that left are remembered with what became
/// of them. A management call that names a guest acts on it only while it runs here; anything else is refused saying
/// where things stand, so a client that drove one guest never drives the next by mistake.
/// </summary>
public sealed class GuestIds
{
    /// <summary>Departed guests remembered (their ids and what became of them).</summary>
    private const int Remembered = 64;

    private readonly object _gate = new();
    private readonly ConditionalWeakTable<VirtualMachine, string> _ids = new();
    private readonly Dictionary<string, string> _left = new(StringComparer.Ordinal);
    private readonly Queue<string> _order = new();
    private readonly string _place;

    /// <param name="place">How refusals name the process ("this target", "this process").</param>
    public GuestIds(string place) => _place = place;

    /// <summary>The id of <paramref name="vm"/> here, made when first asked.</summary>
    public string IdOf(VirtualMachine vm)
    {
        ArgumentNullException.ThrowIfNull(vm);
        return _ids.GetValue(vm, static _ => Guid.NewGuid().ToString("n"));
    }

    /// <summary>
    /// <paramref name="vm"/> left this process, and <paramref name="why"/> is what a call naming it is told; returns
    /// its id.
    /// </summary>
    public string Left(VirtualMachine vm, string why)
    {
        string id = IdOf(vm);
        lock (_gate)
        {
            if (_left.TryAdd(id, why))
            {
                _order.Enqueue(id);
                while (_order.Count > Remembered)
                {
                    _left.Remove(_order.Dequeue());
                }
            }
        }

        return id;
    }

    /// <summary>What a call naming the departed guest <paramref name="id"/> is told, once no guest runs here.</summary>
    public string Gone(string id, string why) => $"guest {id} left {_place}: {why}; no guest runs here now";

    /// <summary>Whether <paramref name="id"/> is a guest that left.</summary>
    public bool HasLeft(string id)
    {
        lock (_gate)
        {
            return _left.ContainsKey(id);
        }
    }

    /// <summary>
    /// The id a request acts on: <paramref name="requested"/> if it is the guest running now (<paramref name="vm"/>),
    /// the running guest's if empty; otherwise an <see cref="RpcException"/> (InvalidArgument for a malformed id,
    /// FailedPrecondition saying what became of the guest and which runs now).
    /// </summary>
    public string Bind(VirtualMachine? vm, string why, string? requested)
    {
        requested ??= string.Empty;
        if (requested.Length > 0 && !IsWellFormed(requested))
        {
            throw RpcErrors.InvalidArgument("guest_id is not a guest id: 32 hex digits, as query-vm returns them");
        }

        string? current = vm is null ? null : IdOf(vm);
        if (requested.Length == 0 || string.Equals(requested, current, StringComparison.Ordinal))
        {
            return current ?? throw RpcErrors.FailedPrecondition($"no guest runs here: {why}");
        }

        string now = current is null ? $"no guest runs here now ({why})" : $"the current guest is {current}";
        string? left;
        lock (_gate)
        {
            _left.TryGetValue(requested, out left);
        }

        throw RpcErrors.FailedPrecondition(left is null
            ? $"guest {requested} does not run on {_place}; {now}"
            : $"guest {requested} left {_place}: {left}; {now}");
    }

    private static bool IsWellFormed(string id) => id.Length == 32 && id.All(char.IsAsciiHexDigitLower);
}
