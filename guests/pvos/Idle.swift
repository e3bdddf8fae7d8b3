// What the kernel does while it waits: driver polls and due timers. A CPU that waits
// for console input (or a shell command that waits for the network) calls Idle.wait:
// drivers registered here get their used rings walked and timers fire, so packets are
// answered while the shell sits at its prompt. Pollers run only from these waits, never
// in interrupt context (irq_entry just records the cause), so they need no locks.

enum Idle {
    /// `poll` does the work; `pending` says cheaply (no exits) whether there is any, and
    /// runs with interrupts off inside Platform.idle.
    static var pollers: [(poll: () -> Void, pending: () -> Bool)] = []
    static var polling = false

    static func register(poll: @escaping () -> Void, pending: @escaping () -> Bool) {
        pollers.append((poll, pending))
    }

    /// Runs every poller and every due timer once (not re-entrantly: a poller that waits
    /// itself does not recurse into the others).
    static func runPollers() {
        guard !polling else { return }
        polling = true
        for p in pollers { p.poll() }
        Timers.runDue()
        polling = false
    }

    static var workPending: Bool {
        for p in pollers where p.pending() { return true }
        return Timers.due
    }

    /// One wait step: polls, and unless `ready()` sleeps until an interrupt (at most a
    /// timer tick, which also bounds how late a timer fires), then polls again.
    static func wait(_ ready: () -> Bool) {
        runPollers()
        if ready() { return }
        Platform.idle(SMP.bsp) { ready() || workPending }
        runPollers()
    }

    /// Waits until `ready()` or `timeoutMs`; returns whether `ready()` held.
    static func wait(timeoutMs: UInt64, _ ready: () -> Bool) -> Bool {
        let deadline = Clock.nanoseconds() + timeoutMs * 1_000_000
        while !ready() {
            if Clock.nanoseconds() >= deadline { return false }
            wait(ready)
        }
        return true
    }
}

/// A timer list: actions at absolute deadlines (Clock.nanoseconds()), kept sorted.
/// Users only schedule and cancel; Idle.wait fires what is due. Today the periodic
/// LAPIC tick bounds each sleep (so a timer fires at most one tick late); a tickless
/// kernel programs a one-shot LAPIC deadline for `nextDeadline` before it sleeps, and
/// nothing that schedules timers changes.
enum Timers {
    struct Entry {
        var deadline: UInt64
        var id: UInt32
        var action: () -> Void
    }
    static var entries: [Entry] = []
    static var lastID: UInt32 = 0

    /// Runs `action` at `deadline` ns; returns an id for `cancel` (never 0).
    @discardableResult
    static func schedule(at deadline: UInt64, _ action: @escaping () -> Void) -> UInt32 {
        lastID &+= 1
        if lastID == 0 { lastID = 1 }
        var i = entries.count
        while i > 0 && entries[i - 1].deadline > deadline { i -= 1 }
        entries.insert(Entry(deadline: deadline, id: lastID, action: action), at: i)
        return lastID
    }

    @discardableResult
    static func schedule(afterMs ms: UInt64, _ action: @escaping () -> Void) -> UInt32 {
        schedule(at: Clock.nanoseconds() + ms * 1_000_000, action)
    }

    static func cancel(_ id: UInt32) {
        guard id != 0 else { return }
        entries.removeAll { $0.id == id }
    }

    /// The earliest deadline (what a one-shot timer would be programmed with).
    static var nextDeadline: UInt64? { entries.first?.deadline }

    static var due: Bool {
        guard let d = nextDeadline else { return false }
        return Clock.nanoseconds() >= d
    }

    /// Fires every due entry, earliest first; an action may schedule or cancel others.
    static func runDue() {
        guard !entries.isEmpty else { return }
        let now = Clock.nanoseconds()
        while let first = entries.first, first.deadline <= now {
            entries.removeFirst()
            first.action()
        }
    }
}

/// Fixed-size packet buffers (2 KiB, two per page, from the page allocator): a virtio-net
/// header plus the largest frame fit in one. Taken and returned by index, so rings map
/// heads to buffers without pointers the device could have written.
enum PacketPool {
    static let bufferSize = 2048
    static var base: UInt64 = 0
    static var capacity = 0
    static var free: [Int32] = []
    static var inUse: [Bool] = []

    static func initialize(_ count: Int) -> Bool {
        guard base == 0 else { return true }
        let pages = UInt64((count * bufferSize + Int(pageSize) - 1) / Int(pageSize))
        base = Pages.allocate(pages)
        guard base != 0 else { return false }
        capacity = count
        free = (0..<count).reversed().map { Int32($0) }
        inUse = [Bool](repeating: false, count: count)
        return true
    }

    static var available: Int { free.count }

    static func take() -> Int? {
        guard let b = free.popLast() else { return nil }
        inUse[Int(b)] = true
        return Int(b)
    }

    /// Ignores a buffer that is not taken (a second release would corrupt the list).
    static func release(_ b: Int) {
        guard b >= 0, b < capacity, inUse[b] else { return }
        inUse[b] = false
        free.append(Int32(b))
    }

    static func address(_ b: Int) -> UInt64 { base + UInt64(b * bufferSize) }
    static func pointer(_ b: Int) -> UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: UInt(address(b)))! }
}
