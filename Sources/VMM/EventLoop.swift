#if canImport(Glibc)
import Glibc
#endif
import CKVM
import CSys
import Devices
import SystemPackage

/// One thread's epoll loop: a device's fds (queue notifications from ioeventfd, a
/// service eventfd, host fds a backend registers: a tap, a socket), or the
/// console/control sockets. Handlers run on this thread only, so what a loop serves needs
/// no locks against itself and a vCPU never blocks on it.
///
/// Each fd has an interest mask (readable, writable); a handler gets the events that
/// fired. Level-triggered: a handler must drain what it is woken for, or drop the
/// interest (`setInterest`), e.g. virtio-net stops watching the tap while the guest has
/// posted no receive buffers.
///
/// Besides its fds the loop answers two requests from other threads: `stop()` (end and
/// join) and `quiesce()`/`resume()` (park between handlers, e.g. while the VM is reset
/// or its state saved, so no handler touches guest memory meanwhile).
///
/// `@unchecked Sendable`: `handlers` and `interest` are touched only on the loop thread
/// once it runs (fds are added before `start()` or from handlers); `stop()` and
/// `quiesce()` only signal an eventfd and wait on `control`.
final class EventLoop: IOInterest, @unchecked Sendable {
    typealias Handler = (_ events: IOEvents) -> Void

    let name: String
    let role: ThreadRole
    let epoll: Int32
    private let wakeEvent: EventFD
    private var handlers: [Int32: Handler] = [:]
    private var interest: [Int32: IOEvents] = [:]
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

    init(name: String, role: ThreadRole = .device) throws(VMMError) {
        self.name = name
        self.role = role
        let e = csys_epoll_create()
        if e < 0 { throw .thread("epoll_create1: \(Errno(rawValue: -e))") }
        epoll = e
        wakeEvent = try EventFD()
        try add(wakeEvent.fd) {}
    }

    deinit { close(epoll) }

    /// Calls `handler` on the loop thread whenever `fd` is readable (an eventfd).
    func add(_ fd: Int32, _ handler: @escaping () -> Void) throws(VMMError) {
        try add(fd, events: .readable) { _ in handler() }
    }

    /// Calls `handler` with the events that fired while `events` is the interest (hang-ups
    /// and errors are always reported).
    func add(_ fd: Int32, events: IOEvents, _ handler: @escaping Handler) throws(VMMError) {
        let rc = csys_epoll_add(epoll, fd, Self.mask(events))
        if rc < 0 { throw .thread("epoll_ctl add \(name): \(Errno(rawValue: -rc))") }
        handlers[fd] = handler
        interest[fd] = events
    }

    /// Changes what wakes `fd`'s handler (loop thread only); no system call when nothing
    /// changes.
    func setInterest(_ fd: Int32, _ events: IOEvents) {
        guard let old = interest[fd], old != events else { return }
        if csys_epoll_modify(epoll, fd, Self.mask(events)) == 0 { interest[fd] = events }
    }

    /// Forgets `fd` (loop thread only); the caller closes it.
    func remove(_ fd: Int32) {
        guard handlers.removeValue(forKey: fd) != nil else { return }
        interest[fd] = nil
        _ = csys_epoll_remove(epoll, fd)
    }

    static func mask(_ e: IOEvents) -> UInt32 {
        (e.contains(.readable) ? csys_epoll_in() : 0) | (e.contains(.writable) ? csys_epoll_out() : 0)
    }

    static func events(_ m: UInt32) -> IOEvents {
        var e: IOEvents = []
        if m & csys_epoll_in() != 0 { e.insert(.readable) }
        if m & csys_epoll_out() != 0 { e.insert(.writable) }
        if m & csys_epoll_hup() != 0 { e.insert(.hangup) }
        if m & csys_epoll_err() != 0 { e.insert(.error) }
        return e
    }

    func start() throws(VMMError) {
        thread = try spawnThread(name: name, role: role) { [self] in run() }
    }

    private func run() {
        var ready = [Int32](repeating: 0, count: 16)
        var masks = [UInt32](repeating: 0, count: 16)
        while true {
            let n = csys_epoll_wait(epoll, &ready, &masks, Int32(ready.count), timeoutMs)
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
                handlers[fd]?(Self.events(masks[i]))
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
