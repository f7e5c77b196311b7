using System.Globalization;
using System.Net;
using System.Net.NetworkInformation;

namespace NetSwap.Server.Access;

/// <summary>
/// The optional list of valid clients (--clients FILE): addresses, subnets and MAC addresses, one per line, '#' starts a
/// comment. A MAC matches an on-link client through the kernel's neighbour table; MACs can be spoofed by anyone on the
/// segment, so they are a convenience, not a defence. The file is re-read when it changes: edits apply to the next
/// connection without a restart.
/// </summary>
internal sealed class ClientList
{
    private readonly string _path;
    private readonly Lock _lock = new();
    private DateTime _loadedWrite = DateTime.MinValue;
    private long _loadedLength = -1;
    private Entries _entries = new([], []);

    private sealed record Entries(IPNetwork[] Networks, PhysicalAddress[] Macs);

    public ClientList(string path)
    {
        _path = path;
        Reload(throwOnError: true);
    }

    public string Path => _path;

    public int Count => _entries.Networks.Length + _entries.Macs.Length;

    /// <summary>Parses the file now; errors name the line. Used at start and on SIGHUP (which must not half-apply).</summary>
    public static (IPNetwork[] Networks, PhysicalAddress[] Macs) Parse(string path, string text)
    {
        var networks = new List<IPNetwork>();
        var macs = new List<PhysicalAddress>();
        foreach (var (number, line) in ListFile.Entries(text))
        {
            if (IPNetwork.TryParse(line, out var network))
            {
                networks.Add(network);
            }
            else if (IPAddress.TryParse(line, out var address))
            {
                networks.Add(AddressRuleSet.HostNetwork(address));
            }
            else if (TryParseMac(line, out var mac))
            {
                macs.Add(mac);
            }
            else
            {
                throw new FormatException($"{path}:{number}: '{line}' is not an address, a subnet or a MAC address");
            }
        }
        return ([.. networks], [.. macs]);
    }

    private static bool TryParseMac(string text, out PhysicalAddress mac)
    {
        mac = PhysicalAddress.None;
        var parts = text.Split(':', '-');
        if (parts.Length != 6 || parts.Any(p => p.Length != 2))
        {
            return false;
        }
        var bytes = new byte[6];
        for (var i = 0; i < 6; i++)
        {
            if (!byte.TryParse(parts[i], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out bytes[i]))
            {
                return false;
            }
        }
        mac = new PhysicalAddress(bytes);
        return true;
    }

    private void Reload(bool throwOnError)
    {
        var info = new FileInfo(_path);
        if (!info.Exists)
        {
            if (throwOnError)
            {
                throw new FileNotFoundException($"client list {_path} does not exist");
            }
            _entries = new Entries([], []);
            return;
        }
        if (info.LastWriteTimeUtc == _loadedWrite && info.Length == _loadedLength)
        {
            return;
        }
        try
        {
            var (networks, macs) = Parse(_path, Hosting.SettingFile.ReadAllText(_path, "client list", 16 << 20));
            _entries = new Entries(networks, macs);
            _loadedWrite = info.LastWriteTimeUtc;
            _loadedLength = info.Length;
        }
        catch (Exception e) when (!throwOnError && e is FormatException or IOException)
        {
            // A half-edited file: keep what was loaded before; the next change is read again.
        }
    }

    /// <summary>Whether the client is on the list (re-reading the file first if it changed).</summary>
    public bool Contains(IPAddress address, out string? why)
    {
        lock (_lock)
        {
            Reload(throwOnError: false);
        }
        var entries = _entries;
        address = AddressRuleSet.Normalize(address);
        foreach (var network in entries.Networks)
        {
            if (network.BaseAddress.AddressFamily == address.AddressFamily && network.Contains(address))
            {
                why = network.ToString();
                return true;
            }
        }
        if (entries.Macs.Length > 0 && NeighbourTable.TryGetMac(address, out var mac) && entries.Macs.Contains(mac))
        {
            why = "MAC " + mac;
            return true;
        }
        why = null;
        return false;
    }
}

/// <summary>The kernel's IPv4 neighbour table (/proc/net/arp): which MAC an on-link address has.</summary>
internal static class NeighbourTable
{
    public static bool TryGetMac(IPAddress address, out PhysicalAddress mac)
    {
        mac = PhysicalAddress.None;
        if (address.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork)
        {
            return false;
        }
        string[] lines;
        try
        {
            lines = File.ReadAllLines("/proc/net/arp");
        }
        catch (IOException)
        {
            return false;
        }
        var text = address.ToString();
        foreach (var line in lines.Skip(1))
        {
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length >= 4 && fields[0] == text && fields[3] != "00:00:00:00:00:00")
            {
                return PhysicalAddress.TryParse(fields[3].Replace(':', '-'), out mac!);
            }
        }
        return false;
    }
}
