using System.Globalization;

namespace NetSwap.Client.Commands;

/// <summary>--name VALUE / --name=VALUE / --flag options of one command; anything unknown is a usage error.</summary>
internal sealed class ArgumentReader
{
    private readonly List<string> _args;

    public ArgumentReader(IEnumerable<string> args) => _args = [.. args];

    public List<string> Positional { get; } = [];

    public bool Flag(string name) => _args.Remove(name);

    /// <summary>
    /// An option whose value is optional and so only ever written --name=VALUE: bare --name means
    /// <paramref name="bare"/>; null when absent. (--name VALUE would swallow a positional argument.)
    /// </summary>
    public string? FlagOrValue(string name, string bare) => Take(name, bare).LastOrDefault();

    public string? Value(string name)
    {
        var values = All(name);
        return values.Count == 0 ? null : values[^1];
    }

    public List<string> All(string name) => Take(name, bare: null);

    /// <summary>
    /// Every value of <paramref name="name"/>, taken out of the arguments: "--name=VALUE", and "--name VALUE" or, when
    /// <paramref name="bare"/> is given, "--name" alone standing for it.
    /// </summary>
    private List<string> Take(string name, string? bare)
    {
        var values = new List<string>();
        for (var i = 0; i < _args.Count;)
        {
            if (_args[i] == name && bare is not null)
            {
                values.Add(bare);
                _args.RemoveAt(i);
            }
            else if (_args[i] == name)
            {
                if (i + 1 >= _args.Count)
                {
                    throw new UsageException($"option '{name}' needs a value");
                }
                values.Add(_args[i + 1]);
                _args.RemoveRange(i, 2);
            }
            else if (_args[i].StartsWith(name + "=", StringComparison.Ordinal))
            {
                values.Add(_args[i][(name.Length + 1)..]);
                _args.RemoveAt(i);
            }
            else
            {
                i++;
            }
        }
        return values;
    }

    public TimeSpan Duration(string name, TimeSpan fallback)
    {
        var text = Value(name);
        return text is null ? fallback
            : ParseDuration(text) ?? throw new UsageException($"option '{name}': '{text}' is not a duration (examples: 1s, 500ms, 2m)");
    }

    /// <summary>1s, 500ms, 2m, or plain seconds.</summary>
    internal static TimeSpan? ParseDuration(string text)
    {
        var t = text.Trim();
        var (number, scale) = t.EndsWith("ms", StringComparison.Ordinal) ? (t[..^2], 0.001)
            : t.EndsWith('s') ? (t[..^1], 1.0)
            : t.EndsWith('m') ? (t[..^1], 60.0)
            : (t, 1.0);
        return double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && value > 0
            ? TimeSpan.FromSeconds(value * scale)
            : null;
    }

    /// <summary>The size given with the option, or null when it is absent.</summary>
    public long? OptionalSize(string name)
    {
        var text = Value(name);
        if (text is null)
        {
            return null;
        }
        return NetSwap.Protocol.Swap.SwapExportName.TryParseSize(text.Trim(), out var bytes) && bytes > 0
            ? bytes
            : throw new UsageException($"option '{name}': '{text}' is not a size (examples: 512M, 1G)");
    }

    public int? OptionalInteger(string name, int min, int max, string what)
    {
        var text = Value(name);
        if (text is null)
        {
            return null;
        }
        return int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value) && value >= min && value <= max
            ? value
            : throw new UsageException($"option '{name}': '{text}' is not {what}");
    }

    /// <summary>One of <paramref name="values"/> (the first when the option is absent).</summary>
    public string OneOf(string name, params string[] values)
    {
        var text = Value(name) ?? values[0];
        return values.Contains(text) ? text : throw new UsageException($"option '{name}': '{text}' is not {string.Join(", ", values[..^1])} or {values[^1]}");
    }

    /// <summary>Whatever is left must be positional; an unknown option is an error, not silently ignored.</summary>
    public void EnsureConsumed(int maxPositional = 0)
    {
        foreach (var arg in _args)
        {
            if (arg.StartsWith('-'))
            {
                throw new UsageException($"unknown option '{arg}'");
            }
            Positional.Add(arg);
        }
        if (Positional.Count > maxPositional)
        {
            throw new UsageException($"unexpected argument '{Positional[maxPositional]}'");
        }
    }
}
