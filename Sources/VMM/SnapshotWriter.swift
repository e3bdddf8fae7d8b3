#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The thread that writes a snapshot's files (docs/snapshot.md), so that the one thread
/// role allowed to create files (seccomp role `snapshot`: openat with O_CREAT|O_EXCL,
/// mkdir, rename, unlink) parses nothing: not the control requests, not the guest's
/// console bytes. The console/control thread captures the state and waits here while
/// the files are written.
///
/// Started by the main thread (`ConsoleHub.start`): a thread started by the console
/// thread would inherit that thread's filter, and filters only narrow.
final class SnapshotWriter: @unchecked Sendable {
    // @unchecked: `job` is handed over under the mutex; the eventfds are thread-safe.
    private let request: EventFD
    private let done: EventFD
    private let job = Mutex<(@Sendable () -> Void)?>(nil)

    /// The eventfds: before the seccomp filter, which allows no new ones.
    init() throws(VMMError) {
        request = try EventFD()
        done = try EventFD()
    }

    /// The thread: from the main thread, after the process filter (see above).
    func start() throws(VMMError) {
        _ = try spawnThread(name: "pvmm-snapshot", role: .snapshot) { [self] in
            while true {
                request.wait(timeoutMs: -1)
                guard let body = job.withLock({ j in defer { j = nil }; return j }) else { continue }
                body()
                done.signal()
            }
        }
    }

    /// Runs `body` on the writer thread and waits for it. One caller at a time (the
    /// VM's operation lock serialises snapshots).
    func run<T>(_ body: @escaping () throws(VMMError) -> T) throws(VMMError) -> T {
        let box = ResultBox<T>(body)
        let work: @Sendable () -> Void = { box.result = Result { () throws(VMMError) -> T in try box.body() } }
        job.withLock { $0 = work }
        request.signal()
        repeat { done.wait(timeoutMs: -1) } while box.result == nil
        return try box.result!.get()
    }
}

/// The job and its result: the caller waits until `done` was signalled, so the two
/// threads never touch it at once.
private final class ResultBox<T>: @unchecked Sendable {
    let body: () throws(VMMError) -> T
    var result: Result<T, VMMError>?
    init(_ body: @escaping () throws(VMMError) -> T) { self.body = body }
}
