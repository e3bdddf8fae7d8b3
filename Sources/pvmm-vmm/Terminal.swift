import CKVM
import Devices
import Synchronization
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// The terminal side of `pvmm run`: raw mode while the VM runs, and a thread that feeds
/// stdin to the guest console. Raw mode is restored on every way out: normal exit,
/// errors, and fatal signals (the handler restores, then re-raises).
final class Terminal: @unchecked Sendable {
    // @unchecked: `saved` is written once before the reader thread and handlers exist.

    /// Ctrl-A x ended the VM (main then says so once the terminal is restored).
    static let stoppedByKey = Atomic<Bool>(false)

    let isTTY: Bool

    private init(isTTY: Bool) { self.isTTY = isTTY }

    static func attach(to vm: VM) -> Terminal {
        let t = Terminal(isTTY: isatty(STDIN_FILENO) == 1)
        if t.isTTY { enterRawMode() }
        let reader = ReaderContext(vm: vm, escapes: t.isTTY)
        // Detached in effect: it blocks in poll(stdin) until the process exits.
        _ = try? spawnThread(name: "console-in", role: .console) { reader.run() }
        return t
    }

    func restore() { if isTTY { Terminal.restoreSaved() } }

    /// After Ctrl-A x: end the guest's unfinished line (the shell's prompt would land on
    /// it) and say why pvmm stopped. Call after `restore`.
    func reportStopKey() {
        guard Terminal.stoppedByKey.load(ordering: .relaxed) else { return }
        writeOut("\n")
        writeError("pvmm: stopped by Ctrl-A x\n")
    }

    // MARK: raw mode (global: signal handlers must reach it)

    nonisolated(unsafe) static var saved = termios()
    nonisolated(unsafe) static var haveSaved = false

    static func enterRawMode() {
        guard tcgetattr(STDIN_FILENO, &saved) == 0 else { return }
        haveSaved = true
        var raw = saved
        cfmakeraw(&raw)
        // Keep output post-processing so the guest's "\r\n" and ours look right.
        raw.c_oflag |= tcflag_t(OPOST)
        tcsetattr(STDIN_FILENO, TCSANOW, &raw)
        for sig in [SIGTERM, SIGHUP, SIGINT, SIGQUIT] {
            signal(sig) { s in
                Terminal.restoreSaved()
                signal(s, SIG_DFL)
                raise(s)
                // Still alive: the first process of a pid namespace (--jail) ignores the
                // default action of a signal it raises; its supervisor dies of it instead.
                _exit(128 + s)
            }
        }
    }

    static func restoreSaved() {
        if haveSaved { tcsetattr(STDIN_FILENO, TCSANOW, &saved) }
    }
}

/// Reads stdin and hands it to the VM, never dropping bytes: when the guest's console
/// buffer is full it waits and offers the rest again.
private final class ReaderContext: @unchecked Sendable {
    // @unchecked: owned by the reader thread alone after creation.
    let vm: VM
    let escapes: Bool
    var escape = ConsoleEscape()

    init(vm: VM, escapes: Bool) {
        self.vm = vm
        self.escapes = escapes
    }

    /// Bytes read from stdin but not yet taken by the guest, at most this many: beyond it
    /// the reader stops reading, so a fast pipe meets back-pressure instead of memory growth.
    static let maxPending = 64 << 10

    func run() {
        var buf = [UInt8](repeating: 0, count: 4096)
        var pending = ByteFIFO(capacity: Self.maxPending)
        var eof = false
        while true {
            if !pending.isEmpty { _ = pending.drain { vm.sendConsoleInput($0) } }
            // Reading goes on while the guest is slow to take input, so Ctrl-A x always
            // works; only a full `pending` (a pipe outrunning the guest) pauses it. A read
            // can add twice its size (Ctrl-A and an unbound key both go), so it needs that room.
            if eof || pending.room < 2 * buf.count {
                if eof && pending.isEmpty { return } // EOF: the guest just gets no more input
                usleep(1000)
                continue
            }
            var p = pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, pending.isEmpty ? -1 : 1) <= 0 { continue }
            let n = buf.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
            if n == 0 { eof = true; continue }
            if n < 0 {
                if errno != EINTR && errno != EAGAIN { eof = true }
                continue
            }
            for b in buf[..<n] {
                if !escapes { _ = pending.push(b); continue }
                switch escape.feed(b) {
                case .none: break
                case .send(let b): _ = pending.push(b)
                case .sendPrefixAnd(let b): _ = pending.push(ConsoleEscape.prefix); _ = pending.push(b)
                case .help: writeOut(ConsoleEscape.help)
                case .stop:
                    Terminal.stoppedByKey.store(true, ordering: .relaxed)
                    vm.stop()
                    return
                }
            }
        }
    }
}
