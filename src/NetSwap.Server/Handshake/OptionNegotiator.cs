using System.Buffers;
using System.Net.Security;
using System.Security.Authentication;
using Microsoft.Extensions.Logging;
using NetSwap.Protocol.Nbd;
using NetSwap.Server.Exports;
using NetSwap.Server.Hosting;
using NetSwap.Server.Tls;
using NetSwap.Server.Transport;

namespace NetSwap.Server.Handshake;

/// <summary>
/// What option haggling agreed on: the export, its backend, how replies are framed, and the ID of the base:allocation
/// metadata context when the client selected it for this export (0: none, so no NBD_CMD_BLOCK_STATUS).
/// </summary>
internal sealed record NegotiatedSession(ExportOffer Offer, ExportLease Lease, NbdTransmissionFlags Flags, bool StructuredReplies, uint AllocationContext = 0)
{
    public BlockBackend Backend => Lease.Backend;
}

/// <summary>
/// The handshake of one connection (spec, "Fixed newstyle negotiation" and "Option types", and the oldstyle one): it
/// answers options until the client enters transmission, and hands on what was agreed in a <see cref="NegotiatedSession"/>
/// whose lease holds everything allocated for the client. It owns nothing else: the bytes are the channel's, the
/// connection's life is the connection's.
/// </summary>
internal sealed class OptionNegotiator(NbdServerContext context, ConnectionChannel channel, ConnectionInfo info, Action<string> cutConnection)
{
    private const NbdHandshakeFlags ServerHandshakeFlags = NbdHandshakeFlags.FixedNewstyle | NbdHandshakeFlags.NoZeroes;
    private const NbdClientFlags KnownClientFlags = NbdClientFlags.FixedNewstyle | NbdClientFlags.NoZeroes;

    private readonly NbdServerContext _context = context;
    private readonly ILogger _logger = context.Logger;
    private readonly Access.AdmissionGate _gate = context.Gate;
    private bool _noZeroes;
    private bool _structuredReplies;
    // Why the access rules refuse this client (null: admitted). A refused client still gets answers: NBD_REP_ERR_POLICY.
    private string? _refusal;
    // The export NBD_OPT_SET_META_CONTEXT last selected base:allocation for (null: no context selected). It holds
    // only if GO or EXPORT_NAME then names the same export.
    private string? _allocationExport;
    private const uint AllocationContextId = 1;
    private string _closeReason = "client closed the connection";

    private ConnectionInfo Info => info;
    private long Id => info.Id;
    private string Client => info.RemoteAddress;

    /// <summary>Why the handshake ended without a session (meaningful once <see cref="NegotiateAsync"/> returned null).</summary>
    public string CloseReason => _closeReason;

    /// <summary>
    /// Looks an export up for this client and applies the export's own rules; with <paramref name="attach"/>, also the
    /// per-export client limit and then the attach itself, the only step that allocates anything: what it took comes
    /// back as the lease, which the caller releases, or hands on to transmission in the session.
    /// </summary>
    private async ValueTask<(ExportLookup Lookup, ExportLease? Lease)> AttachAsync(string name, CancellationToken cancellationToken)
    {
        var lookup = await ResolveAsync(name, attach: true, cancellationToken);
        return (lookup, lookup.Backend is { } backend ? new ExportLease(_gate, lookup.Offer!.PolicyName, backend) : null);
    }

    private async ValueTask<ExportLookup> ResolveAsync(string name, bool attach, CancellationToken cancellationToken)
    {
        var lookup = _context.Exports.Lookup(name, Info);
        if (!lookup.Succeeded)
        {
            return lookup;
        }
        var offer = lookup.Offer!;
        if (_gate.AdmitExport(offer.PolicyName, name, Info.Address, channel.IsTls) is { } refusal)
        {
            if (refusal.DeniedBy is { } denied)
            {
                ConnectionLog.AccessDenied(_logger, Id, Client, denied);
            }
            return ExportLookup.Refused(refusal.Error, refusal.Message);
        }
        if (!attach)
        {
            return lookup;
        }
        if (!_gate.TryEnterExport(offer.PolicyName))
        {
            return ExportLookup.Refused(NbdOptionReplyType.ErrPolicy, $"max-clients-per-export reached for '{offer.PolicyName}'");
        }
        lookup = await offer.AttachAsync(new AttachContext(Info, () => cutConnection("the same client reconnected"), cancellationToken));
        if (!lookup.Succeeded)
        {
            _gate.LeaveExport(offer.PolicyName);
        }
        return lookup;
    }

    /// <summary>
    /// Runs the handshake under its deadline. Null: the client left, was refused, or broke the rules (<see cref="CloseReason"/>
    /// says which). <paramref name="abort"/> is the connection's own end.
    /// </summary>
    public async Task<NegotiatedSession?> NegotiateAsync(bool oldstyle, CancellationToken abort)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(abort);
        deadline.CancelAfter(_context.Options.HandshakeTimeout);
        try
        {
            return oldstyle ? await OldstyleAsync(deadline.Token) : await NewstyleAsync(deadline.Token);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !abort.IsCancellationRequested)
        {
            _closeReason = "handshake timeout";
            ConnectionLog.HandshakeTimedOut(_logger, Id, Client, _context.Options.HandshakeTimeout);
            return null;
        }
    }

    /// <summary>
    /// Oldstyle (nbd-client before 3.10, old LTSP images): nothing is negotiated; the server sends size and flags at once.
    /// The connection gets a swap area of the default size, so this listener exists only with swap on.
    /// </summary>
    private async Task<NegotiatedSession?> OldstyleAsync(CancellationToken cancellationToken)
    {
        if (_gate.AdmitClient(Info.Address) is { } refusal)
        {
            return Refuse($"refused by the access rules: {refusal}");
        }
        if (_gate.SwapRequiresTls)
        {
            return Refuse("the oldstyle handshake cannot do TLS, which this server requires");
        }
        var (lookup, lease) = await AttachAsync(Protocol.Swap.SwapExportName.Prefix, cancellationToken);
        if (lease is null)
        {
            ConnectionLog.ExportRefused(_logger, Id, Client, "(oldstyle)", lookup.Error, lookup.Message ?? "");
            _closeReason = "export refused";
            return null;
        }
        var flags = lookup.Offer!.TransmissionFlags(structuredReplies: false);
        var greeting = new byte[NbdOldstyleGreeting.Size];
        new NbdOldstyleGreeting((ulong)lookup.Backend!.Size, flags).Write(greeting);
        try
        {
            await channel.WriteAsync(greeting, cancellationToken);
        }
        catch
        {
            lease.Dispose();
            throw;
        }
        ConnectionLog.ExportAttached(_logger, Id, Client, lookup.Offer.Name + " (oldstyle)", lookup.Backend.Size, flags, false);
        return new NegotiatedSession(lookup.Offer, lease, flags, false);
    }

    private async Task<NegotiatedSession?> NewstyleAsync(CancellationToken cancellationToken)
    {
        var small = new byte[32];
        new NbdNewstyleGreeting(ServerHandshakeFlags).Write(small);
        await channel.WriteAsync(small.AsMemory(0, NbdNewstyleGreeting.Size), cancellationToken);

        if (!await channel.Reader.TryReadExactlyAsync(small.AsMemory(0, 4), cancellationToken))
        {
            return Refuse("client closed before sending its flags");
        }
        var clientFlags = (NbdClientFlags)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(small);
        if ((clientFlags & ~KnownClientFlags) != 0)
        {
            // The server MUST drop the connection on unknown client flags (spec, "Client flags").
            return Refuse($"unknown client flags 0x{(uint)clientFlags:x8}");
        }
        _noZeroes = (clientFlags & NbdClientFlags.NoZeroes) != 0;
        _refusal = _gate.AdmitClient(Info.Address);
        if (_refusal is not null)
        {
            ConnectionLog.AccessDenied(_logger, Id, Client, _refusal);
        }

        for (var count = 1; ; count++)
        {
            if (!await channel.Reader.TryReadExactlyAsync(small.AsMemory(0, NbdOptionHeader.Size), cancellationToken))
            {
                _closeReason = "client left during option haggling";
                return null;
            }
            NbdOptionHeader.TryRead(small, out var option);
            if (count > Protocol.Nbd.NbdLimits.MaxOptionCount)
            {
                return Refuse($"more than {NbdLimits.MaxOptionCount} options");
            }
            if (option.Length > NbdLimits.MaxOptionLength
                || (option.Option == NbdOption.ExportName && option.Length > NbdLimits.MaxStringLength))
            {
                return Refuse($"option {option.Option} with {option.Length} bytes of data exceeds the limit");
            }
            // Bounded by the checks above; returned (cleared) before the next option.
            var data = ArrayPool<byte>.Shared.Rent((int)option.Length);
            try
            {
                var payload = data.AsMemory(0, (int)option.Length);
                await channel.Reader.ReadExactlyAsync(payload, cancellationToken);
                var outcome = await HandleOptionAsync(option, payload, cancellationToken);
                if (outcome.Finished)
                {
                    return outcome.Session;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(data, clearArray: true);
            }
        }
    }

    private readonly record struct OptionOutcome(bool Finished, NegotiatedSession? Session)
    {
        public static OptionOutcome Continue => new(false, null);
        public static OptionOutcome End => new(true, null);
        public static OptionOutcome Enter(NegotiatedSession session) => new(true, session);
    }

    private async ValueTask<OptionOutcome> HandleOptionAsync(NbdOptionHeader option, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (_context.ShuttingDown && option.Option != NbdOption.Abort)
        {
            if (option.Option == NbdOption.ExportName)
            {
                Refuse("server shutting down");
                return OptionOutcome.End;
            }
            await AnswerAsync(option, NbdOptionReplyType.ErrShutdown, "server is shutting down", cancellationToken);
            return OptionOutcome.Continue;
        }
        if (_refusal is not null && option.Option != NbdOption.Abort)
        {
            // Refused clients learn nothing but that: no export names, no sizes, nothing allocated.
            if (option.Option == NbdOption.ExportName)
            {
                _closeReason = "refused by the access rules";
                return OptionOutcome.End;
            }
            await AnswerAsync(option, NbdOptionReplyType.ErrPolicy, "this server does not admit your address", cancellationToken);
            return OptionOutcome.Continue;
        }
        if (!channel.IsTls && _gate.RequiresTls && option.Option is not (NbdOption.StartTls or NbdOption.Abort))
        {
            // FORCEDTLS: nothing is negotiated in the clear.
            if (option.Option == NbdOption.ExportName)
            {
                Refuse("NBD_OPT_EXPORT_NAME before TLS, which this server requires");
                return OptionOutcome.End;
            }
            await AnswerAsync(option, NbdOptionReplyType.ErrTlsReqd, "this server requires TLS: send NBD_OPT_STARTTLS first", cancellationToken);
            return OptionOutcome.Continue;
        }
        switch (option.Option)
        {
            case NbdOption.ExportName:
                return await ExportNameAsync(data, cancellationToken);
            case NbdOption.Abort:
                // The client may already have closed; a failed ACK is not an error (spec, NBD_OPT_ABORT).
                try
                {
                    await AnswerAsync(option, NbdOptionReplyType.Ack, null, cancellationToken);
                }
                catch (IOException)
                {
                }
                _closeReason = "client aborted the handshake";
                return OptionOutcome.End;
            case NbdOption.List:
                await ListAsync(option, cancellationToken);
                return OptionOutcome.Continue;
            case NbdOption.StartTls:
                return await StartTlsAsync(option, cancellationToken);
            case NbdOption.Info or NbdOption.Go:
                return await InfoOrGoAsync(option, data, cancellationToken);
            case NbdOption.ListMetaContext or NbdOption.SetMetaContext:
                await MetaContextAsync(option, data, cancellationToken);
                return OptionOutcome.Continue;
            case NbdOption.StructuredReply:
                if (option.Length != 0)
                {
                    await AnswerAsync(option, NbdOptionReplyType.ErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data", cancellationToken);
                    return OptionOutcome.Continue;
                }
                _structuredReplies = true;
                await AnswerAsync(option, NbdOptionReplyType.Ack, null, cancellationToken);
                return OptionOutcome.Continue;
            default:
                await AnswerAsync(option, NbdOptionReplyType.ErrUnsup, $"option {(uint)option.Option} is not supported", cancellationToken);
                return OptionOutcome.Continue;
        }
    }

    /// <summary>
    /// NBD_OPT_STARTTLS: ACK, then the TLS handshake on the same connection. Everything negotiated before is discarded
    /// (structured replies must be asked for again, inside TLS). A failed handshake ends the connection: after the ACK
    /// it is too late to go on in the clear.
    /// </summary>
    private async ValueTask<OptionOutcome> StartTlsAsync(NbdOptionHeader option, CancellationToken cancellationToken)
    {
        var tls = _gate.Tls;
        if (tls.Mode == TlsMode.Off)
        {
            await AnswerAsync(option, NbdOptionReplyType.ErrPolicy, "TLS is not configured on this server", cancellationToken);
            return OptionOutcome.Continue;
        }
        if (channel.IsTls || option.Length != 0)
        {
            await AnswerAsync(option, NbdOptionReplyType.ErrInvalid, channel.IsTls ? "TLS is already established" : "NBD_OPT_STARTTLS takes no data", cancellationToken);
            return OptionOutcome.Continue;
        }
        if (channel.Reader.Buffered != 0)
        {
            // The client may not send anything before it has our ACK: bytes here would be lost under TLS.
            Refuse("data sent after NBD_OPT_STARTTLS before its reply");
            return OptionOutcome.End;
        }
        await AnswerAsync(option, NbdOptionReplyType.Ack, null, cancellationToken);
        string? refusal = null;
        string? subject = null;
        string? fingerprint = null;
        SslStream ssl;
        try
        {
            ssl = await channel.StartTlsAsync(new SslServerAuthenticationOptions
            {
                ServerCertificate = tls.ServerCertificate,
                ClientCertificateRequired = tls.WantsClientCertificate,
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                CertificateRevocationCheckMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck,
                RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                {
                    refusal = tls.CheckClientCertificate(certificate, out subject, out fingerprint);
                    return refusal is null;
                },
            }, cancellationToken);
        }
        catch (Exception e) when (e is AuthenticationException or IOException)
        {
            _closeReason = "TLS handshake failed";
            ConnectionLog.TlsRefused(_logger, Id, Client, refusal ?? e.Message, subject ?? "(none)", fingerprint ?? "(none)");
            return OptionOutcome.End;
        }
        _structuredReplies = false;
        _allocationExport = null;
        ConnectionLog.TlsEstablished(_logger, Id, Client, ssl.SslProtocol.ToString(), ssl.NegotiatedCipherSuite.ToString(), subject ?? "(no client certificate)", fingerprint ?? "-");
        return OptionOutcome.Continue;
    }

    private async ValueTask ListAsync(NbdOptionHeader option, CancellationToken cancellationToken)
    {
        if (option.Length != 0)
        {
            await AnswerAsync(option, NbdOptionReplyType.ErrInvalid, "NBD_OPT_LIST takes no data", cancellationToken);
            return;
        }
        foreach (var export in _context.Exports.List(Info))
        {
            if (_gate.HiddenBeforeTls(export.PolicyName, channel.IsTls))
            {
                // SELECTIVETLS: TLS-only exports may be left out of the list until TLS is up (spec, NBD_OPT_LIST).
                continue;
            }
            // The details after the name are the description, as qemu-nbd sends and libnbd reads them.
            var payload = new byte[NbdServerReply.Size(export.Name, export.Description)];
            NbdServerReply.Write(payload, export.Name, export.Description);
            await SendOptionReplyAsync(option.Option, NbdOptionReplyType.Server, payload, cancellationToken);
        }
        await AnswerAsync(option, NbdOptionReplyType.Ack, null, cancellationToken);
        ConnectionLog.ExportsListed(_logger, Id, Client);
    }

    private async ValueTask<OptionOutcome> InfoOrGoAsync(NbdOptionHeader option, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (!NbdInfoRequest.TryParse(data.Span, out var request, out var problem))
        {
            await AnswerAsync(option, NbdOptionReplyType.ErrInvalid, problem, cancellationToken);
            return OptionOutcome.Continue;
        }
        // Only at GO, with the client admitted and its export chosen, is anything allocated for it.
        var (lookup, lease) = option.Option == NbdOption.Go ? await AttachAsync(request.Name, cancellationToken) : (await ResolveAsync(request.Name, attach: false, cancellationToken), null);
        if (!lookup.Succeeded)
        {
            ConnectionLog.ExportRefused(_logger, Id, Client, request.Name, lookup.Error, lookup.Message ?? "");
            await AnswerAsync(option, lookup.Error, lookup.Message, cancellationToken);
            return OptionOutcome.Continue;
        }
        var offer = lookup.Offer!;
        var flags = offer.TransmissionFlags(_structuredReplies);
        try
        {
            await SendInfoAsync(option.Option, offer, flags, request.Requests, cancellationToken);
            await AnswerAsync(option, NbdOptionReplyType.Ack, null, cancellationToken);
        }
        catch when (lease is not null)
        {
            // Attached but the client is gone before it heard so: what was allocated for it must not leak.
            lease.Dispose();
            throw;
        }
        if (lease is null)
        {
            return OptionOutcome.Continue;
        }
        ConnectionLog.ExportAttached(_logger, Id, Client, offer.Name, lease.Backend.Size, flags, _structuredReplies);
        return OptionOutcome.Enter(new NegotiatedSession(offer, lease, flags, _structuredReplies, AllocationContextFor(request.Name)));
    }

    private async ValueTask SendInfoAsync(NbdOption option, ExportOffer offer, NbdTransmissionFlags flags, NbdInfoType[] requested, CancellationToken cancellationToken)
    {
        var buffer = new byte[NbdInfoReply.StringSize(offer.Name) + NbdInfoReply.StringSize(offer.Description ?? "") + 64];
        var n = NbdInfoReply.WriteExport(buffer, (ulong)offer.Size, flags);
        await SendOptionReplyAsync(option, NbdOptionReplyType.Info, buffer.AsMemory(0, n), cancellationToken);
        // Block size is sent whether asked or not: our minimum of 1 constrains no client.
        n = NbdInfoReply.WriteBlockSize(buffer, NbdLimits.MinimumBlockSize, NbdLimits.PreferredBlockSize, NbdLimits.MaximumBlockSize);
        await SendOptionReplyAsync(option, NbdOptionReplyType.Info, buffer.AsMemory(0, n), cancellationToken);
        if (requested.Contains(NbdInfoType.Name))
        {
            n = NbdInfoReply.WriteString(buffer, NbdInfoType.Name, offer.Name);
            await SendOptionReplyAsync(option, NbdOptionReplyType.Info, buffer.AsMemory(0, n), cancellationToken);
        }
        if (requested.Contains(NbdInfoType.Description) && offer.Description is not null)
        {
            n = NbdInfoReply.WriteString(buffer, NbdInfoType.Description, offer.Description);
            await SendOptionReplyAsync(option, NbdOptionReplyType.Info, buffer.AsMemory(0, n), cancellationToken);
        }
    }

    private async ValueTask<OptionOutcome> ExportNameAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (!NbdStrings.TryDecode(data.Span, out var name))
        {
            Refuse("NBD_OPT_EXPORT_NAME with an invalid name");
            return OptionOutcome.End;
        }
        var (lookup, lease) = await AttachAsync(name, cancellationToken);
        if (lease is null)
        {
            // NBD_OPT_EXPORT_NAME cannot be answered with an error: the spec says to terminate the session.
            ConnectionLog.ExportRefused(_logger, Id, Client, name, lookup.Error, lookup.Message ?? "");
            _closeReason = "export refused";
            return OptionOutcome.End;
        }
        var offer = lookup.Offer!;
        var flags = offer.TransmissionFlags(structuredReplies: _structuredReplies);
        var reply = new byte[NbdExportNameReply.FullSize];
        var n = new NbdExportNameReply((ulong)lease.Backend.Size, flags).Write(reply, _noZeroes);
        try
        {
            await channel.WriteAsync(reply.AsMemory(0, n), cancellationToken);
        }
        catch
        {
            // The client never got the export: nothing to keep for it.
            lease.Dispose();
            throw;
        }
        ConnectionLog.ExportAttached(_logger, Id, Client, offer.Name, lease.Backend.Size, flags, _structuredReplies);
        return OptionOutcome.Enter(new NegotiatedSession(offer, lease, flags, _structuredReplies, AllocationContextFor(name)));
    }

    /// <summary>
    /// NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT (spec, "Metadata querying"): the one context this server
    /// has, base:allocation (holes and zeroes, from SEEK_DATA/SEEK_HOLE), for an export the client may see. Both need
    /// structured replies first; SET replaces whatever an earlier SET selected, for the export it names.
    /// </summary>
    private async ValueTask MetaContextAsync(NbdOptionHeader option, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        var set = option.Option == NbdOption.SetMetaContext;
        if (set)
        {
            _allocationExport = null;
        }
        if (!_structuredReplies)
        {
            await AnswerAsync(option, NbdOptionReplyType.ErrInvalid, "metadata contexts need structured replies: send NBD_OPT_STRUCTURED_REPLY first", cancellationToken);
            return;
        }
        if (!NbdMetaContextRequest.TryParse(data.Span, out var request, out var problem, out var tooBig))
        {
            await AnswerAsync(option, tooBig ? NbdOptionReplyType.ErrTooBig : NbdOptionReplyType.ErrInvalid, problem, cancellationToken);
            return;
        }
        var lookup = await ResolveAsync(request.ExportName, attach: false, cancellationToken);
        if (!lookup.Succeeded)
        {
            ConnectionLog.ExportRefused(_logger, Id, Client, request.ExportName, lookup.Error, lookup.Message ?? "");
            await AnswerAsync(option, lookup.Error, lookup.Message, cancellationToken);
            return;
        }
        // No query: a listing names every context; a selection selects none.
        var allocation = request.Queries.Length == 0 ? !set : request.Queries.Any(q => NbdMetaContexts.Matches(q, listing: !set));
        if (allocation)
        {
            var payload = new byte[NbdMetaContexts.ReplySize(NbdMetaContexts.BaseAllocation)];
            NbdMetaContexts.WriteReply(payload, set ? AllocationContextId : 0, NbdMetaContexts.BaseAllocation);
            await SendOptionReplyAsync(option.Option, NbdOptionReplyType.MetaContext, payload, cancellationToken);
            if (set)
            {
                _allocationExport = request.ExportName;
            }
        }
        await AnswerAsync(option, NbdOptionReplyType.Ack, null, cancellationToken);
    }

    /// <summary>The base:allocation context's ID for the export entered, if SET_META_CONTEXT selected it for that one.</summary>
    private uint AllocationContextFor(string export) =>
        _structuredReplies && _allocationExport is not null && _allocationExport == export ? AllocationContextId : 0;

    private ValueTask AnswerAsync(NbdOptionHeader option, NbdOptionReplyType type, string? message, CancellationToken cancellationToken)
    {
        ConnectionLog.OptionAnswered(_logger, Id, Client, option.Option, option.Length, type);
        if (message is null)
        {
            return SendOptionReplyAsync(option.Option, type, default, cancellationToken);
        }
        return SendOptionReplyAsync(option.Option, type, System.Text.Encoding.UTF8.GetBytes(NbdStrings.Truncate(message)), cancellationToken);
    }

    private async ValueTask SendOptionReplyAsync(NbdOption option, NbdOptionReplyType type, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        var message = new byte[NbdOptionReplyHeader.Size + payload.Length];
        new NbdOptionReplyHeader(option, type, (uint)payload.Length).Write(message);
        payload.Span.CopyTo(message.AsSpan(NbdOptionReplyHeader.Size));
        await channel.WriteAsync(message, cancellationToken);
    }

    private NegotiatedSession? Refuse(string reason)
    {
        _closeReason = "handshake refused";
        ConnectionLog.HandshakeFailed(_logger, Id, Client, reason);
        return null;
    }
}
