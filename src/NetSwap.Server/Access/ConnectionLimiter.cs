using System.Net;

namespace NetSwap.Server.Access;

/// <summary>
/// Counts connections as they are accepted: total and per address at once, and new connections per second per address.
/// A connection over a limit is closed at once and counted, not logged one by one: a flood must not fill the log or
/// the memory. Entries of addresses that have gone quiet are forgotten, so a flood from many addresses stays bounded.
/// Lock order: <see cref="_lock"/> is a leaf.
/// </summary>
internal sealed class ConnectionLimiter
{
    private readonly Lock _lock = new();
    private readonly Dictionary<IPAddress, (int Open, TokenBucket Rate)> _perAddress = [];
    private int _open;
    private AccessLimits _limits;
    private long _refusedRate;
    private long _refusedTotal;
    private long _refusedPerAddress;

    public ConnectionLimiter(AccessLimits limits) => _limits = limits;

    public int Open
    {
        get
        {
            lock (_lock)
            {
                return _open;
            }
        }
    }

    public void Update(AccessLimits limits)
    {
        lock (_lock)
        {
            _limits = limits;
            foreach (var (_, entry) in _perAddress)
            {
                entry.Rate.Update(limits.ConnectionRate, limits.ConnectionBurst);
            }
        }
    }

    /// <summary>Admits a new connection, or names the limit it hit (the caller closes it at once).</summary>
    public string? TryAdmit(IPAddress? address)
    {
        lock (_lock)
        {
            var limits = _limits;
            if (address is not null)
            {
                address = AddressRuleSet.Normalize(address);
                if (!_perAddress.TryGetValue(address, out var entry))
                {
                    if (_perAddress.Count > 4096)
                    {
                        Prune();
                    }
                    entry = (0, new TokenBucket(limits.ConnectionRate, limits.ConnectionBurst));
                }
                if (limits.ConnectionRate > 0 && !entry.Rate.TryTake())
                {
                    _perAddress[address] = entry;
                    _refusedRate++;
                    return "connection-rate";
                }
                if (limits.MaxClientsPerAddress > 0 && entry.Open >= limits.MaxClientsPerAddress)
                {
                    _perAddress[address] = entry;
                    _refusedPerAddress++;
                    return "max-clients-per-address";
                }
                if (limits.MaxClients > 0 && _open >= limits.MaxClients)
                {
                    _perAddress[address] = entry;
                    _refusedTotal++;
                    return "max-clients";
                }
                _perAddress[address] = (entry.Open + 1, entry.Rate);
            }
            else if (limits.MaxClients > 0 && _open >= limits.MaxClients)
            {
                _refusedTotal++;
                return "max-clients";
            }
            _open++;
            return null;
        }
    }

    public void Release(IPAddress? address)
    {
        lock (_lock)
        {
            _open--;
            if (address is not null && _perAddress.TryGetValue(address = AddressRuleSet.Normalize(address), out var entry))
            {
                _perAddress[address] = (entry.Open - 1, entry.Rate);
            }
        }
    }

    /// <summary>Refusals since the last call: (rate, per address, total), for a periodic summary in the log.</summary>
    public (long Rate, long PerAddress, long Total) TakeRefusals()
    {
        lock (_lock)
        {
            var result = (_refusedRate, _refusedPerAddress, _refusedTotal);
            _refusedRate = _refusedPerAddress = _refusedTotal = 0;
            return result;
        }
    }

    private void Prune()
    {
        foreach (var (address, entry) in _perAddress.ToList())
        {
            if (entry.Open == 0 && entry.Rate.IsFull)
            {
                _perAddress.Remove(address);
            }
        }
    }
}
