#if canImport(Glibc)
import Glibc
#endif

/// A pthread mutex with one condition variable, guarding state its owner keeps (passed
/// `inout` to each call): for states other threads wait on (the vCPU mailboxes, a device
/// loop's quiesce request, the lifecycle operation lock). Synchronization's Mutex has no
/// condition variable; this is the one place that does. Not generic itself (the methods
/// are), so no generic class metadata is instantiated at run time: the VMM's resident
/// memory is mostly code pages, and that runtime path is one more region of them.
///
/// `@unchecked Sendable`: the mutex and condition variable are thread-safe; callers only
/// touch the guarded state inside these calls.
public final class Monitor: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()

    public init() {
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

    public func withLock<Value, R>(_ value: inout Value, _ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body(&value)
    }

    /// Runs `body` with the lock held and wakes every waiter.
    public func update<Value, R>(_ value: inout Value, _ body: (inout Value) -> R) -> R {
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
    public func wait<Value, R>(_ value: inout Value, until ready: (Value) -> Bool, deadlineNs: UInt64? = nil,
                               _ body: (inout Value, Bool) -> R) -> R {
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
