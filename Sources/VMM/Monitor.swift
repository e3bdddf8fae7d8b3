#if canImport(Glibc)
import Glibc
#endif

/// A value behind a pthread mutex with one condition variable: for states other threads
/// wait on (a vCPU's mailbox, a device loop's quiesce request, the supervisor's queue).
/// Synchronization's Mutex has no condition variable; this is the one place that does.
///
/// `@unchecked Sendable`: `value` is only touched with the mutex held.
public final class Monitor<Value>: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        pthread_mutex_init(&mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        // Deadlines are on the monotonic clock: a wall-clock step must not fire a stop timeout.
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(&cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body(&value)
    }

    /// Runs `body` with the lock held and wakes every waiter.
    public func update<R>(_ body: (inout Value) -> R) -> R {
        pthread_mutex_lock(&mutex)
        defer {
            pthread_cond_broadcast(&cond)
            pthread_mutex_unlock(&mutex)
        }
        return body(&value)
    }

    /// Waits until `ready` holds (checked with the lock held), then runs `body` under the
    /// same lock and wakes the other waiters. With `deadlineNs` (CLOCK_MONOTONIC), gives
    /// up at that time: `body` then runs with `ready` false (its second argument).
    public func wait<R>(until ready: (Value) -> Bool, deadlineNs: UInt64? = nil, _ body: (inout Value, Bool) -> R) -> R {
        pthread_mutex_lock(&mutex)
        defer {
            pthread_cond_broadcast(&cond)
            pthread_mutex_unlock(&mutex)
        }
        while !ready(value) {
            if let d = deadlineNs {
                if monotonicNanoseconds() >= d { return body(&value, false) }
                var ts = timespec(tv_sec: Int(d / 1_000_000_000), tv_nsec: Int(d % 1_000_000_000))
                pthread_cond_timedwait(&cond, &mutex, &ts)
            } else {
                pthread_cond_wait(&cond, &mutex)
            }
        }
        return body(&value, true)
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
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
