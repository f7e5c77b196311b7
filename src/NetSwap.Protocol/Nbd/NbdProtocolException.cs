using System.Diagnostics.CodeAnalysis;

namespace NetSwap.Protocol.Nbd;

/// <summary>Broken framing: the stream can no longer be parsed and the connection must end.</summary>
public sealed class NbdProtocolException : Exception
{
    public NbdProtocolException(string message) : base(message)
    {
    }

    public NbdProtocolException()
    {
    }

    public NbdProtocolException(string message, Exception innerException) : base(message, innerException)
    {
    }

    [DoesNotReturn]
    public static void Throw(string message) => throw new NbdProtocolException(message);
}
