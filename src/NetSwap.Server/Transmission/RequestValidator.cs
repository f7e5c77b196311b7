using NetSwap.Protocol.Nbd;

namespace NetSwap.Server.Transmission;

/// <summary>
/// Checks a well-framed request against the negotiated export before anything is executed (nbdkit's validate_request).
/// Returns the NBD error the client gets and the reason the log gets.
/// </summary>
internal static class RequestValidator
{
    /// <param name="blockStatus">A metadata context was selected for the export (NBD_CMD_BLOCK_STATUS is valid).</param>
    public static (NbdError Error, string? Reason) Validate(in NbdRequest request, NbdTransmissionFlags exportFlags, ulong exportSize, bool structuredReplies, bool blockStatus = false)
    {
        var allowed = AllowedFlags(request.Command, exportFlags, structuredReplies, blockStatus);
        if (allowed is null)
        {
            return (NbdError.Inval, $"unknown or unnegotiated command {(ushort)request.Command}");
        }
        if ((request.Flags & ~allowed.Value) != 0)
        {
            return (NbdError.Inval, $"flags 0x{(ushort)request.Flags:x} not valid for {request.Command}");
        }
        var readOnly = (exportFlags & NbdTransmissionFlags.ReadOnly) != 0;
        switch (request.Command)
        {
            case NbdCommand.Flush:
                return request.Offset != 0 || request.Length != 0 ? (NbdError.Inval, "FLUSH with nonzero offset or length") : (NbdError.None, null);
            case NbdCommand.Write or NbdCommand.Trim or NbdCommand.WriteZeroes when readOnly:
                return (NbdError.Perm, $"{request.Command} on a read-only export");
        }
        if (request.Length == 0)
        {
            return (NbdError.Inval, $"{request.Command} of length 0");
        }
        if (request.Command is NbdCommand.Read or NbdCommand.Write && request.Length > NbdLimits.MaxPayloadLength)
        {
            return (NbdError.Inval, $"{request.Command} of {request.Length} bytes exceeds the {NbdLimits.MaxPayloadLength}-byte maximum");
        }
        // offset + length > size, written so that it cannot overflow.
        if (request.Offset > exportSize || request.Length > exportSize - request.Offset)
        {
            var error = request.Command is NbdCommand.Write or NbdCommand.WriteZeroes ? NbdError.NoSpc : NbdError.Inval;
            return (error, $"{request.Command} at {request.Offset}+{request.Length} beyond the end ({exportSize})");
        }
        return (NbdError.None, null);
    }

    /// <summary>Flags documented for each command, given what the export advertised; null: the command is not accepted.</summary>
    private static NbdCommandFlags? AllowedFlags(NbdCommand command, NbdTransmissionFlags exportFlags, bool structuredReplies, bool blockStatus)
    {
        // FUA is valid on every command once SEND_FUA is advertised (the server may ignore it where nothing is written).
        var fua = (exportFlags & NbdTransmissionFlags.SendFua) != 0 ? NbdCommandFlags.Fua : NbdCommandFlags.None;
        return command switch
        {
            NbdCommand.Read => fua | (structuredReplies ? NbdCommandFlags.DontFragment : NbdCommandFlags.None),
            NbdCommand.Write => fua,
            NbdCommand.Flush when (exportFlags & NbdTransmissionFlags.SendFlush) != 0 => fua,
            NbdCommand.Trim when (exportFlags & NbdTransmissionFlags.SendTrim) != 0 => fua,
            NbdCommand.Cache when (exportFlags & NbdTransmissionFlags.SendCache) != 0 => fua,
            // Without a selected context the spec asks for EINVAL, which the null below gives.
            NbdCommand.BlockStatus when structuredReplies && blockStatus => fua | NbdCommandFlags.ReqOne,
            NbdCommand.WriteZeroes when (exportFlags & NbdTransmissionFlags.SendWriteZeroes) != 0 =>
                fua | NbdCommandFlags.NoHole | ((exportFlags & NbdTransmissionFlags.SendFastZero) != 0 ? NbdCommandFlags.FastZero : NbdCommandFlags.None),
            // Read-only exports do not advertise TRIM or WRITE_ZEROES; a client sending them anyway is told EPERM.
            NbdCommand.Trim or NbdCommand.WriteZeroes when (exportFlags & NbdTransmissionFlags.ReadOnly) != 0 => ~NbdCommandFlags.None,
            _ => null,
        };
    }
}
