using System.Net.NetworkInformation;

namespace NetSwap.Client;

/// <summary>
/// The stable token a machine asks for its swap with (swap/TOKEN), so that after a reconnect it finds its area again:
/// from /etc/machine-id, else the MAC address of the first network interface, else the host name.
/// </summary>
internal static class MachineToken
{
    public static string Get(string machineIdPath = "/etc/machine-id")
    {
        try
        {
            var id = File.ReadAllText(machineIdPath).Trim();
            if (id.Length >= 16 && id.All(char.IsAsciiHexDigit))
            {
                return "m-" + id[..16].ToLowerInvariant();
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        var mac = NetworkInterface.GetAllNetworkInterfaces()
            .Where(n => n.NetworkInterfaceType != NetworkInterfaceType.Loopback)
            .Select(n => n.GetPhysicalAddress().GetAddressBytes())
            .FirstOrDefault(b => b.Length == 6 && b.Any(x => x != 0));
        if (mac is not null)
        {
            return "mac-" + Convert.ToHexString(mac).ToLowerInvariant();
        }
        var host = new string(Environment.MachineName.Where(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-').Take(60).ToArray());
        return host.Length > 0 ? "host-" + host : "netswap";
    }
}
