using System.Text.Json;
using System.Text.Json.Serialization;

namespace NetSwap.Protocol.Control;

/// <summary>
/// The control socket's one exchange: the client sends the line <c>status\n</c>, the server answers with this document
/// as JSON and closes. Read by <c>netswapd status</c> and <c>netswap server-status</c>.
/// </summary>
public sealed record ServerStatus(
    string Version,
    DateTimeOffset StartedAt,
    IReadOnlyList<ClientStatus> Clients,
    SwapStatus? Swap);

/// <summary>One connected client (in the transmission phase).</summary>
public sealed record ClientStatus(
    long Connection,
    string Address,
    string Export,
    long Size,
    long ReservedBytes,
    long BytesRead,
    long BytesWritten,
    DateTimeOffset ConnectedSince);

public sealed record SwapStatus(
    string Directory,
    long InUse,
    long Budget,
    long FileSystemTotal,
    long FileSystemAvailable,
    IReadOnlyList<SwapAreaStatus> Areas);

/// <summary>A swap area: attached to a client, or waiting out its grace period.</summary>
public sealed record SwapAreaStatus(
    long Id,
    string Client,
    string Export,
    string? Token,
    long Size,
    long ReservedBytes,
    long BytesRead,
    long BytesWritten,
    string State,
    DateTimeOffset CreatedAt,
    DateTimeOffset? GraceDeadline);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(ServerStatus))]
public sealed partial class ControlJsonContext : JsonSerializerContext
{
    public static string Serialize(ServerStatus status) => JsonSerializer.Serialize(status, Default.ServerStatus);

    public static ServerStatus? Deserialize(string json) => JsonSerializer.Deserialize(json, Default.ServerStatus);
}
