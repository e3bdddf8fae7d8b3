#if canImport(Glibc)
import Glibc
#endif

// The clocks behind the protocol's timestamps (`started_ns`, `ts_ns`, uptimes): the VMM
// and the daemon read them the same way.

/// CLOCK_MONOTONIC in nanoseconds: system-wide, so the VMM and the daemon (also a
/// restarted one) can compare their readings.
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// CLOCK_REALTIME in nanoseconds (timestamps users compare with other clocks).
public func wallClockNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
