#if canImport(Glibc)
import Glibc
#endif
import CKVM
import CSys
import Devices
import SystemPackage

/// One device thread: epoll over the device's fds (queue notifications from ioeventfd,
/// a service eventfd, and host fds a backend registers: a tap, a socket) plus a stop
/// eventfd. Handlers run on this thread only, so a device needs no locks against itself
/// and a vCPU never blocks on device I/O.
///
/// Each fd has an interest mask (readable, writable); a handler gets the events that
/// fired. Level-triggered: a handler must drain what it is woken for, or drop the
/// interest (`setInterest`), e.g. virtio-net stops watching the tap while the guest has
/// posted no receive buffers.
///
/// `@unchecked Sendable`: `handlers` and `interest` are filled before `start()` and
/// afterwards changed only on the loop thread (handlers calling add/remove/setInterest);
/// `stop()` only writes an eventfd.
final class EventLoop: IOInterest, @unchecked Sendable {
    let name: String
    let epoll: Int32
    let stopEvent: EventFD
    private var handlers: [Int32: (IOEvents) -> Void] = [:]
    private var interest: [Int32: IOEvents] = [:]
    private var thread: pthread_t?

    init(name: String) throws(VMMError) {
        self.name = name
        let e = csys_epoll_create()
        if e < 0 { throw .thread("epoll_create1: \(Errno(rawValue: -e))") }
        epoll = e
        stopEvent = try EventFD()
        try add(stopEvent.fd) {}
    }

    deinit { close(epoll) }

    /// Calls `handler` on the loop thread whenever `fd` is readable (an eventfd).
    func add(_ fd: Int32, _ handler: @escaping () -> Void) throws(VMMError) {
        try add(fd, events: .readable) { _ in handler() }
    }

    /// Calls `handler` with the events that fired while `events` is the interest (hang-ups
    /// and errors are always reported).
    func add(_ fd: Int32, events: IOEvents, _ handler: @escaping (IOEvents) -> Void) throws(VMMError) {
        let rc = csys_epoll_add(epoll, fd, Self.mask(events))
        if rc < 0 { throw .thread("epoll_ctl add \(name): \(Errno(rawValue: -rc))") }
        handlers[fd] = handler
        interest[fd] = events
    }

    /// Changes what wakes `fd`'s handler; no system call when nothing changes.
    func setInterest(_ fd: Int32, _ events: IOEvents) {
        guard let old = interest[fd], old != events else { return }
        if csys_epoll_modify(epoll, fd, Self.mask(events)) == 0 { interest[fd] = events }
    }

    /// Stops watching `fd` (a backend whose peer went away).
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
        let box = Unmanaged.passRetained(self).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            let loop = Unmanaged<EventLoop>.fromOpaque(arg!).takeRetainedValue()
            _ = ckvm_set_thread_name(String(loop.name.prefix(15)))
            loop.run()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<EventLoop>.fromOpaque(box).release()
            throw .thread("pthread_create \(name): \(Errno(rawValue: rc))")
        }
        thread = tid
    }

    private func run() {
        var ready = [Int32](repeating: 0, count: 16)
        var masks = [UInt32](repeating: 0, count: 16)
        while true {
            let n = csys_epoll_wait(epoll, &ready, &masks, Int32(ready.count), -1)
            if n == -EINTR { continue }
            if n < 0 { return }
            for i in 0..<Int(n) {
                let fd = ready[i]
                if fd == stopEvent.fd { return }
                handlers[fd]?(Self.events(masks[i]))
            }
        }
    }

    /// Ends the loop and joins its thread.
    func stop() {
        guard let t = thread else { return }
        stopEvent.signal()
        pthread_join(t, nil)
        thread = nil
    }
}
