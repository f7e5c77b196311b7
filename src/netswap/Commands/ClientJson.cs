using System.Text.Json.Serialization;

namespace NetSwap.Client.Commands;

/// <summary>What `discover --json`, `exports --json` and `status --json` write: names in snake_case, one array each.</summary>
internal sealed record ServerJson(string Address, int Port, bool Admits, ulong FreeCapacity, ulong MaxSize, uint Clients, int LoadPerMille,
    bool TlsOffered, bool TlsRequired, string Name, string Version, double RttMs);

internal sealed record ExportJson(string Name, ulong Size, bool ReadOnly, bool MultiConn, string? Description);

internal sealed record SwapJson(string Device, string SwapDevice, string Server, string Export, long Size, long Used, bool Active, bool Encrypted);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(List<ServerJson>))]
[JsonSerializable(typeof(List<ExportJson>))]
[JsonSerializable(typeof(List<SwapJson>))]
internal sealed partial class ClientJsonContext : JsonSerializerContext;
