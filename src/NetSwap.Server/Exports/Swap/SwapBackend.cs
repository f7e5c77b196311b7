namespace NetSwap.Server.Exports.Swap;

/// <summary>
/// A connection's view of its swap area. In reserve mode TRIM and WRITE_ZEROES zero ranges in place
/// (FALLOC_FL_ZERO_RANGE) so the reservation that guarantees no ENOSPC is kept; in sparse mode TRIM punches holes.
/// Releasing it hands the area back to the registry, which destroys it or keeps it for a reconnect.
/// </summary>
internal sealed class SwapBackend : FileBackend
{
    private readonly SwapAreaRegistry _registry;
    private readonly SwapArea _area;
    private readonly bool _keepReservation;

    public SwapBackend(SwapAreaRegistry registry, SwapArea area)
        : base(area.Handle, area.Size, readOnly: false, multiConn: false, ownsHandle: false)
    {
        _registry = registry;
        _area = area;
        _keepReservation = registry.Options.Allocation == SwapAllocation.Reserve;
    }

    public SwapArea Area => _area;

    public override int Read(long offset, Span<byte> destination)
    {
        var errno = base.Read(offset, destination);
        Interlocked.Add(ref _area.BytesRead, destination.Length);
        return errno;
    }

    public override void OnDirectRead(int length) => Interlocked.Add(ref _area.BytesRead, length);

    protected override int Written(long offset, int length, int errno)
    {
        Interlocked.Add(ref _area.BytesWritten, length);
        if (length > 0)
        {
            _area.MarkWritten(offset, length);
        }
        return errno;
    }

    public override bool WouldAllocate(long offset, int length) => length > 0 && _area.MayAllocate(offset, length);

    public override int Trim(long offset, long length, bool fua)
    {
        if (!_keepReservation)
        {
            var punched = base.Trim(offset, length, fua);
            if (punched == 0 && length > 0)
            {
                _area.MarkPunched(offset, length);
            }
            return punched;
        }
        // The swapped-out pages are gone; zeroing keeps the blocks allocated. Where zeroing in place is impossible,
        // TRIM stays the no-op the spec allows.
        var errno = ZeroRange(offset, length, mayPunch: false);
        return errno == LinuxFile.EOPNOTSUPP ? 0 : errno;
    }

    public override int WriteZeroes(long offset, long length, bool mayPunch, bool fast, bool fua)
    {
        var punch = mayPunch && !_keepReservation;
        var errno = base.WriteZeroes(offset, length, punch, fast, fua);
        if (errno == 0 && length > 0)
        {
            // A punched range is empty again; one zeroed in place (or with zeros written) holds its blocks.
            if (punch)
            {
                _area.MarkPunched(offset, length);
            }
            else
            {
                _area.MarkWritten(offset, length);
            }
        }
        return errno;
    }

    public override void Release(bool cleanDisconnect) => _registry.Release(_area, cleanDisconnect);
}
