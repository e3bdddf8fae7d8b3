#if canImport(Glibc)
import Glibc
#endif
import CKVM
import Sandbox
import SystemPackage

/// One device thread: epoll over the device's eventfds (queue notifications from
/// ioeventfd, host-side input) plus a stop eventfd. Handlers run on this thread only, so
/// a device needs no locks against itself and a vCPU never blocks on device I/O.
///
/// `@unchecked Sendable`: `handlers` is filled before `start()` and only read afterwards
/// by the loop thread; `stop()` only writes an eventfd.
final class EventLoop: @unchecked Sendable {
    let name: String
    let epoll: Int32
    let stopEvent: EventFD
    private var handlers: [Int32: () -> Void] = [:]
    private var thread: pthread_t?

    init(name: String) throws(VMMError) {
        self.name = name
        let e = ckvm_epoll_create()
        if e < 0 { throw .thread("epoll_create1: \(Errno(rawValue: -e))") }
        epoll = e
        stopEvent = try EventFD()
        try add(stopEvent.fd) {}
    }

    deinit { close(epoll) }

    /// Calls `handler` on the loop thread whenever `fd` is readable (level-triggered:
    /// the handler must drain it).
    func add(_ fd: Int32, _ handler: @escaping () -> Void) throws(VMMError) {
        let rc = ckvm_epoll_add(epoll, fd)
        if rc < 0 { throw .thread("epoll_ctl \(name): \(Errno(rawValue: -rc))") }
        handlers[fd] = handler
    }

    func start() throws(VMMError) {
        let box = Unmanaged.passRetained(self).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            let loop = Unmanaged<EventLoop>.fromOpaque(arg!).takeRetainedValue()
            let name = String(loop.name.prefix(15))
            _ = ckvm_set_thread_name(name)
            // Before the first event: queue notifications carry guest-written rings.
            Seccomp.enterRoleOrDie(.device, label: name)
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
        while true {
            let n = ckvm_epoll_wait(epoll, &ready, Int32(ready.count), -1)
            if n == -EINTR { continue }
            if n < 0 { return }
            for i in 0..<Int(n) {
                let fd = ready[i]
                if fd == stopEvent.fd { return }
                handlers[fd]?()
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
