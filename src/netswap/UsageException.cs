namespace NetSwap.Client;

/// <summary>A command line that cannot be right (exit 2); the message names the option or argument.</summary>
internal sealed class UsageException(string message) : Exception(message);
