// What the kernel does while it waits: driver polls and due timers. A CPU that waits
// for console input (or a shell command that waits for the network) calls Idle.wait:
// drivers registered here get their used rings walked and timers fire, so packets are
// answered while the shell sits at its prompt. Pollers run only from these waits, never
// in interrupt context (irq_entry just records the cause), so they need no locks.
// Under pvmm with polling on (`pvmm_poll_us=N`) a wait first polls for up to N us with
// the drivers' interrupts suppressed (Linux's cpuidle-haltpoll: a halt and its wake-up
// interrupt cost far more than a short spin when the next packet or key is near), then
// re-arms them (`arm`) and halts.

enum Idle {
    /// `poll` does the work; `pending` says cheaply (no exits) whether there is any, and
    /// runs with interrupts off inside Platform.idle.
    /// `arm` asks for the driver's interrupt again before the CPU halts (drivers leave
    /// it suppressed after collecting while `Virtio.polling`).
    static var pollers: [(poll: () -> Void, pending: () -> Bool, arm: () -> Void)] = []
    static var polling = false

    static func register(poll: @escaping () -> Void, pending: @escaping () -> Bool, arm: @escaping () -> Void = {}) {
        pollers.append((poll, pending, arm))
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

    /// One wait step: polls, and unless `ready()` sleeps until an interrupt, `deadline`
    /// (a TSC value, 0 = none) or the earliest timer (the kernel is tickless: nothing
    /// else would wake it), then polls again.
    static func wait(until deadline: UInt64 = 0, _ ready: () -> Bool) {
        runPollers()
        if ready() { return }
        var wake = deadline
        if let next = Timers.nextDeadline {
            let t = Timer.tsc(atUptime: next)
            if wake == 0 || t < wake { wake = t }
        }
        let t0 = rdtsc()
        if Virtio.polling && haltPoll(until: wake, ready) { runPollers(); return }
        for p in pollers { p.arm() }
        Platform.idle(SMP.bsp, until: wake) { ready() || workPending }
        adapt(slept: rdtsc() &- t0)
        runPollers()
    }

    /// The spin budget (TSC cycles), adapted as Linux's cpuidle-haltpoll does: a halt
    /// shorter than `Virtio.pollCycles` (a longer spin would have caught its wake-up)
    /// doubles it, from a 4 us start; a longer one halves it, down to 0. A wait whose
    /// events come late (or never) so stops spinning, and a CPU shared with the device
    /// threads is not taken from them for nothing.
    static var pollBudget: UInt64 = 0

    static func adapt(slept: UInt64) {
        guard Virtio.polling else { return }
        let start = 4 * Platform.tscKHz / 1000
        if slept < Virtio.pollCycles { pollBudget = min(Virtio.pollCycles, max(start, pollBudget * 2)) }
        else { pollBudget = pollBudget / 2 < start ? 0 : pollBudget / 2 }
    }

    /// Spins for up to `pollBudget` (not past `wake`, 0 = none) until `ready()` or a
    /// poller has work; true if so. Interrupts stay on: a spin finds what they bring.
    static func haltPoll(until wake: UInt64, _ ready: () -> Bool) -> Bool {
        guard pollBudget > 0 else { return false }
        var end = rdtsc() &+ pollBudget
        if wake != 0 && wake < end { end = wake }
        while rdtsc() < end {
            if ready() || workPending { return true }
            cpuPause()
        }
        return false
    }

    /// Waits until `ready()` or `timeoutMs`; returns whether `ready()` held.
    static func wait(timeoutMs: UInt64, _ ready: () -> Bool) -> Bool {
        let end = Timer.after(ms: timeoutMs)
        while !ready() {
            if rdtsc() >= end { return false }
            wait(until: end, ready)
        }
        return true
    }

    /// Sleeps until TSC `tsc`, polling meanwhile.
    static func sleep(until tsc: UInt64) {
        while rdtsc() < tsc { wait(until: tsc) { rdtsc() >= tsc } }
    }
}

/// The kernel's timer list (timers/TimerList.swift) on kvmclock nanoseconds: ARP
/// retries, DHCP, ping. Idle.wait fires what is due and arms the one-shot LAPIC timer
/// (Timer.wake, through Platform.idle's deadline) for `nextDeadline`.
enum Timers {
    static var list = TimerList()

    /// Runs `action` at `deadline` ns (Clock.nanoseconds()); an id for `cancel`, never 0.
    @discardableResult
    static func schedule(at deadline: UInt64, _ action: @escaping () -> Void) -> UInt32 {
        list.schedule(at: deadline, action)
    }

    @discardableResult
    static func schedule(afterMs ms: UInt64, _ action: @escaping () -> Void) -> UInt32 {
        schedule(at: Clock.nanoseconds() + ms * 1_000_000, action)
    }

    static func cancel(_ id: UInt32) { list.cancel(id) }

    static var nextDeadline: UInt64? { list.nextDeadline }

    static var due: Bool {
        guard let d = list.nextDeadline else { return false }
        return Clock.nanoseconds() >= d
    }

    /// Fires every due entry, earliest first (each outside the list's access, so it may
    /// schedule or cancel others).
    static func runDue() {
        guard list.count > 0 else { return }
        let now = Clock.nanoseconds()
        while let action = list.popDue(now) { action() }
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
