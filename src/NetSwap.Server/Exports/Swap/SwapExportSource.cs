using NetSwap.Protocol.Nbd;
using NetSwap.Protocol.Swap;

namespace NetSwap.Server.Exports.Swap;

/// <summary>The swap namespace of export names: each lookup is a private area for the asking connection.</summary>
internal sealed class SwapExportSource
{
    public const string Description = "private swap space, created on connect and destroyed on disconnect";

    private readonly SwapAreaRegistry _registry;

    public SwapExportSource(SwapAreaRegistry registry) => _registry = registry;

    public SwapAreaRegistry Registry => _registry;

    public ExportLookup Lookup(string name, ConnectionInfo client)
    {
        if (!SwapExportName.TryParse(name, out var parsed, out var problem))
        {
            return ExportLookup.Refused(NbdOptionReplyType.ErrInvalid, problem!);
        }
        var admission = _registry.Check(parsed, client);
        return admission.Admitted
            ? ExportLookup.Found(new SwapOffer(_registry, name, parsed, admission.Size))
            : ExportLookup.Refused(admission.Error, admission.Reason!);
    }

    /// <summary>How "swap" looks in NBD_OPT_LIST.</summary>
    public ExportOffer ListEntry => new SwapOffer(_registry, SwapExportName.Prefix, default, _registry.Options.DefaultSize);

    private sealed class SwapOffer(SwapAreaRegistry registry, string name, SwapExportName parsed, long size) : ExportOffer
    {
        public override string Name => name;
        public override string? Description => SwapExportSource.Description;
        public override long Size => size;
        public override bool IsReadOnly => false;
        // Each connection has its own data: multi-conn would be a lie.
        public override bool CanMultiConn => false;
        public override string PolicyName => SwapExportName.Prefix;

        public override async ValueTask<ExportLookup> AttachAsync(AttachContext context)
        {
            var (area, error, reason) = await registry.AttachAsync(parsed, name, context.Client, context.AbortConnection, context.CancellationToken);
            return area is null
                ? ExportLookup.Refused(error, reason!)
                : ExportLookup.Attached(new SizedOffer(this, area.Size), new SwapBackend(registry, area));
        }
    }

    /// <summary>The offer as attached: a reattached area keeps its own size whatever the name asked.</summary>
    private sealed class SizedOffer(ExportOffer inner, long size) : ExportOffer
    {
        public override string Name => inner.Name;
        public override string? Description => inner.Description;
        public override long Size => size;
        public override bool IsReadOnly => false;
        public override bool CanMultiConn => false;
        public override string PolicyName => inner.PolicyName;
        public override ValueTask<ExportLookup> AttachAsync(AttachContext context) => inner.AttachAsync(context);
    }
}
