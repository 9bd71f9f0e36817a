namespace Migration.Shared.Guest.Workloads;

/// <summary>
/// Token bucket on an injected clock: <see cref="TryTake"/> succeeds while the work done stays within
/// <c>rate x elapsed</c> plus a small burst. Tests drive it with a manual clock, so rates are checked without timing.
/// </summary>
internal sealed class RatePacer
{
    private readonly TimeProvider _time;
    private readonly double _perSecond;
    private readonly double _burst;
    private long _lastTimestamp;
    private double _tokens;

    public RatePacer(TimeProvider time, double perSecond, double burstSeconds = 0.01)
    {
        _time = time;
        _perSecond = perSecond;
        _burst = Math.Max(1, perSecond * burstSeconds);
        _lastTimestamp = time.GetTimestamp();
    }

    /// <summary>Unlimited when the rate is 0.</summary>
    public bool Unlimited => _perSecond <= 0;

    /// <summary>Unused allowance; travels in vCPU state so a resumed vCPU paces exactly as it would have.</summary>
    public double Tokens
    {
        get
        {
            Refill();
            return _tokens;
        }

        set => _tokens = Math.Clamp(value, 0, _burst);
    }

    public bool TryTake(double amount = 1)
    {
        if (Unlimited)
        {
            return true;
        }

        Refill();
        if (_tokens < amount)
        {
            return false;
        }

        _tokens -= amount;
        return true;
    }

    private void Refill()
    {
        long now = _time.GetTimestamp();
        _tokens = Math.Min(_burst, _tokens + (_time.GetElapsedTime(_lastTimestamp, now).TotalSeconds * _perSecond));
        _lastTimestamp = now;
    }
}
