#if canImport(Glibc)
import Glibc
#endif
import CKVM
import SystemPackage

/// One thread's epoll loop: a device's eventfds (queue notifications from ioeventfd,
/// host-side input), or the console/control sockets. Handlers run on this thread only,
/// so what a loop serves needs no locks against itself and a vCPU never blocks on it.
///
/// Besides its fds the loop answers two requests from other threads: `stop()` (end and
/// join) and `quiesce()`/`resume()` (park between handlers, e.g. while the VM is reset
/// or its state saved, so no handler touches guest memory meanwhile).
///
/// `@unchecked Sendable`: `handlers` is touched only on the loop thread once it runs
/// (fds are added before `start()` or from handlers); `stop()` and `quiesce()` only
/// signal an eventfd and wait on `control`.
final class EventLoop: @unchecked Sendable {
    typealias Handler = (_ events: UInt32) -> Void

    let name: String
    let role: ThreadRole
    let epoll: Int32
    private let wakeEvent: EventFD
    private var handlers: [Int32: Handler] = [:]
    private var thread: SpawnedThread?
    /// Called when `timeoutMs` passes with nothing ready (retrying input the guest was
    /// not ready for); -1 waits forever.
    var timeoutMs: Int32 = -1
    var onTimeout: (() -> Void)?

    private struct Control {
        var stop = false
        var quiesce = false
        var parked = false
    }
    private let control = Monitor()
    /// Guarded by `control`.
    private var controlState = Control()

    static var readable: UInt32 { ckvm_epoll_in() }
    static var writable: UInt32 { ckvm_epoll_out() }
    static var hangup: UInt32 { ckvm_epoll_hup() }

    init(name: String, role: ThreadRole = .device) throws(VMMError) {
        self.name = name
        self.role = role
        let e = ckvm_epoll_create()
        if e < 0 { throw .thread("epoll_create1: \(Errno(rawValue: -e))") }
        epoll = e
        wakeEvent = try EventFD()
        try add(wakeEvent.fd) {}
    }

    deinit { close(epoll) }

    /// Calls `handler` on the loop thread whenever `fd` is readable (level-triggered:
    /// the handler must drain it).
    func add(_ fd: Int32, _ handler: @escaping () -> Void) throws(VMMError) {
        try add(fd, events: Self.readable) { _ in handler() }
    }

    /// Calls `handler` with the ready events whenever one of `events` (and always
    /// hang-up/error) holds for `fd`.
    func add(_ fd: Int32, events: UInt32, _ handler: @escaping Handler) throws(VMMError) {
        let rc = ckvm_epoll_ctl(epoll, 1, fd, events)
        if rc < 0 { throw .thread("epoll_ctl \(name): \(Errno(rawValue: -rc))") }
        handlers[fd] = handler
    }

    /// Changes the events `fd` waits for (loop thread only).
    func modify(_ fd: Int32, events: UInt32) {
        _ = ckvm_epoll_ctl(epoll, 3, fd, events)
    }

    /// Forgets `fd` (loop thread only); the caller closes it.
    func remove(_ fd: Int32) {
        _ = ckvm_epoll_ctl(epoll, 2, fd, 0)
        handlers[fd] = nil
    }

    func start() throws(VMMError) {
        thread = try spawnThread(name: name, role: role) { [self] in run() }
    }

    private func run() {
        var ready = [Int32](repeating: 0, count: 16)
        var events = [UInt32](repeating: 0, count: 16)
        while true {
            let n = ckvm_epoll_wait_events(epoll, &ready, &events, Int32(ready.count), timeoutMs)
            if n == -EINTR { continue }
            if n < 0 { return }
            if n == 0 { onTimeout?(); continue }
            for i in 0..<Int(n) {
                let fd = ready[i]
                if fd == wakeEvent.fd {
                    _ = wakeEvent.drain()
                    if serveControl() { return }
                    continue
                }
                handlers[fd]?(events[i])
            }
        }
    }

    /// Handles stop and quiesce requests; returns true to end the loop.
    private func serveControl() -> Bool {
        if control.withLock(&controlState, { $0.quiesce && !$0.stop }) {
            control.update(&controlState) { $0.parked = true }
            control.wait(&controlState, until: { !$0.quiesce || $0.stop }) { c, _ in c.parked = false }
        }
        return control.withLock(&controlState) { $0.stop }
    }

    /// Wakes the loop from any thread (it re-reads its control state).
    func wake() { wakeEvent.signal() }

    /// Parks the loop between handlers; returns once it is parked. `resume()` undoes it.
    func quiesce() {
        guard thread != nil else { return }
        control.update(&controlState) { $0.quiesce = true }
        wakeEvent.signal()
        control.wait(&controlState, until: { $0.parked || $0.stop }) { _, _ in }
    }

    func resume() {
        control.update(&controlState) { $0.quiesce = false }
    }

    /// Ends the loop and joins its thread.
    func stop() {
        guard let t = thread else { return }
        control.update(&controlState) { $0.stop = true }
        wakeEvent.signal()
        t.join()
        thread = nil
    }
}
