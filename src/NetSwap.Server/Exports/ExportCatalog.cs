using NetSwap.Protocol.Nbd;

namespace NetSwap.Server.Exports;

/// <summary>An export as a client may see it in NBD_OPT_INFO/LIST, before anything is allocated for it.</summary>
internal abstract class ExportOffer
{
    public abstract string Name { get; }
    /// <summary>Sent in NBD_INFO_DESCRIPTION when set; never defaults to the server-side path.</summary>
    public abstract string? Description { get; }
    public abstract long Size { get; }
    public abstract bool IsReadOnly { get; }
    public abstract bool CanMultiConn { get; }

    /// <summary>The name access rules and per-export limits know the export by ("swap" for every swap area).</summary>
    public virtual string PolicyName => Name;

    /// <summary>Called only once NBD_OPT_GO or NBD_OPT_EXPORT_NAME has been accepted: allocates what the connection needs.</summary>
    public abstract ValueTask<ExportLookup> AttachAsync(AttachContext context);

    public NbdTransmissionFlags TransmissionFlags(bool structuredReplies)
    {
        var flags = NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush | NbdTransmissionFlags.SendCache;
        flags |= IsReadOnly
            ? NbdTransmissionFlags.ReadOnly
            : NbdTransmissionFlags.SendFua | NbdTransmissionFlags.SendTrim | NbdTransmissionFlags.SendWriteZeroes | NbdTransmissionFlags.SendFastZero;
        if (structuredReplies)
        {
            flags |= NbdTransmissionFlags.SendDf;
        }
        if (CanMultiConn)
        {
            flags |= NbdTransmissionFlags.CanMultiConn;
        }
        return flags;
    }
}

/// <summary>The outcome of looking an export up or attaching it: an offer, a backend, or a refusal the client is told.</summary>
internal readonly record struct ExportLookup(ExportOffer? Offer, BlockBackend? Backend, NbdOptionReplyType Error, string? Message)
{
    public static ExportLookup Found(ExportOffer offer) => new(offer, null, 0, null);
    public static ExportLookup Attached(ExportOffer offer, BlockBackend backend) => new(offer, backend, 0, null);
    public static ExportLookup Refused(NbdOptionReplyType error, string message) => new(null, null, error, message);
    public bool Succeeded => Offer is not null;
}

/// <summary>Where export names lead: the configured file exports, and later the swap factory.</summary>
internal interface IExportCatalog
{
    ExportLookup Lookup(string name, ConnectionInfo client);
    IEnumerable<ExportOffer> List(ConnectionInfo client);
}

/// <summary>Who is asking: used by policy and logged with every decision. Address is null for non-IP transports.</summary>
internal sealed record ConnectionInfo(long Id, string RemoteAddress, System.Net.IPAddress? Address = null);

/// <summary>What an export may need from the connection that attaches it.</summary>
internal readonly record struct AttachContext(ConnectionInfo Client, Action AbortConnection, CancellationToken CancellationToken);

/// <summary>The configured file and block-device exports, opened once at start so a typo fails the daemon, not a client.</summary>
internal sealed class FileExportCatalog : IExportCatalog, IDisposable
{
    private readonly Dictionary<string, FileExport> _exports = new(StringComparer.Ordinal);
    private readonly string? _defaultExport;

    public FileExportCatalog(IEnumerable<ExportDefinition> definitions, string? defaultExport)
    {
        try
        {
            foreach (var definition in definitions)
            {
                if (!_exports.TryAdd(definition.Name, new FileExport(definition)))
                {
                    throw new ArgumentException($"export '{definition.Name}' is defined twice");
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        if (defaultExport is not null && !_exports.ContainsKey(defaultExport))
        {
            Dispose();
            throw new ArgumentException($"default export '{defaultExport}' is not a configured export");
        }
        _defaultExport = defaultExport;
    }

    public int Count => _exports.Count;
    public bool HasDefaultExport => _defaultExport is not null;

    public ExportLookup Lookup(string name, ConnectionInfo client)
    {
        if (name.Length == 0 && _defaultExport is not null)
        {
            name = _defaultExport;
        }
        return _exports.TryGetValue(name, out var export)
            ? ExportLookup.Found(export)
            : ExportLookup.Refused(NbdOptionReplyType.ErrUnknown, $"no export named '{name}' on this server");
    }

    public IEnumerable<ExportOffer> List(ConnectionInfo client) => _exports.Values;

    public void Dispose()
    {
        foreach (var export in _exports.Values)
        {
            export.Dispose();
        }
    }
}

internal sealed record ExportDefinition(string Name, string Path, bool ReadOnly, string? Description)
{
    /// <summary>Rules of this export alone (allow/deny in its [exports.NAME] table).</summary>
    public List<Access.AddressRule> Rules { get; init; } = [];

    /// <summary>Served only over TLS (with --tls on).</summary>
    public bool TlsOnly { get; init; }
}

/// <summary>One configured file export: one shared descriptor, so every connection sees the same data (multi-conn).</summary>
internal sealed class FileExport : ExportOffer, IDisposable
{
    private readonly FileBackend _shared;
    private readonly ExportDefinition _definition;

    public FileExport(ExportDefinition definition)
    {
        _definition = definition;
        try
        {
            _shared = FileBackend.Open(definition.Path, definition.ReadOnly);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"export '{definition.Name}': cannot open {definition.Path}: {e.Message}", e);
        }
    }

    public override string Name => _definition.Name;
    public override string? Description => _definition.Description;
    public override long Size => _shared.Size;
    public override bool IsReadOnly => _definition.ReadOnly;
    public override bool CanMultiConn => true;
    public string Path => _definition.Path;

    public override ValueTask<ExportLookup> AttachAsync(AttachContext context) =>
        ValueTask.FromResult(ExportLookup.Attached(this, new FileBackend(_shared.Handle, _shared.Size, _definition.ReadOnly, multiConn: true, ownsHandle: false)));

    public void Dispose() => _shared.Dispose();
}

/// <summary>
/// All export names of a server: the swap namespace ("swap", "swap/TOKEN", "swap:SIZE"…, and "" when the server has no
/// file exports) and the configured file exports.
/// </summary>
internal sealed class ExportCatalog : IExportCatalog, IDisposable
{
    private readonly FileExportCatalog _files;
    private readonly Swap.SwapExportSource? _swap;

    public ExportCatalog(FileExportCatalog files, Swap.SwapExportSource? swap)
    {
        _files = files;
        _swap = swap;
    }

    public FileExportCatalog Files => _files;
    public Swap.SwapExportSource? Swap => _swap;

    /// <summary>Swap-only: the empty name means swap (the embedded default: no file exports, swap on).</summary>
    public bool SwapOnly => _swap is not null && _files.Count == 0;

    public ExportLookup Lookup(string name, ConnectionInfo client)
    {
        if (_swap is not null)
        {
            if (NetSwap.Protocol.Swap.SwapExportName.IsSwapName(name))
            {
                return _swap.Lookup(name, client);
            }
            if (name.Length == 0 && !_files.HasDefaultExport && SwapOnly)
            {
                return _swap.Lookup(NetSwap.Protocol.Swap.SwapExportName.Prefix, client);
            }
        }
        return _files.Lookup(name, client);
    }

    public IEnumerable<ExportOffer> List(ConnectionInfo client) =>
        _swap is null ? _files.List(client) : _files.List(client).Append(_swap.ListEntry);

    public void Dispose()
    {
        _swap?.Registry.Dispose();
        _files.Dispose();
    }
}
