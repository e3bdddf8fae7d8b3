// A list of actions at absolute deadlines, kept sorted: the part of pvos's timers that
// does not know the clock (Idle.swift's `Timers` supplies "now"). Pure code, also built
// for the host (target PvosTimers) for unit tests.
// Users schedule and cancel; whoever sleeps asks `nextDeadline` and arms the one-shot
// LAPIC timer for it (Idle.wait -> Platform.idle -> Timer.wake), so nothing that
// schedules timers knows how the CPU is woken.

public struct TimerList {
    struct Entry {
        var deadline: UInt64
        var id: UInt32
        var action: () -> Void
    }
    var entries: [Entry] = []
    var lastID: UInt32 = 0

    public init() {}

    /// Adds `action` at `deadline`, after any entry with the same deadline (so equal
    /// deadlines fire in scheduling order). Returns an id for `cancel`, never 0.
    public mutating func schedule(at deadline: UInt64, _ action: @escaping () -> Void) -> UInt32 {
        lastID &+= 1
        if lastID == 0 { lastID = 1 }
        var i = entries.count
        while i > 0 && entries[i - 1].deadline > deadline { i -= 1 }
        entries.insert(Entry(deadline: deadline, id: lastID, action: action), at: i)
        return lastID
    }

    /// Removes the entry with `id` (0 or an id that already fired: nothing).
    public mutating func cancel(_ id: UInt32) {
        guard id != 0 else { return }
        entries.removeAll { $0.id == id }
    }

    /// The earliest deadline: what a one-shot timer would be programmed with.
    public var nextDeadline: UInt64? { entries.first?.deadline }

    public var count: Int { entries.count }

    /// Takes the earliest entry due at `now`. The caller runs it outside this access, so
    /// an action may schedule or cancel others: `while let a = list.popDue(now) { a() }`.
    public mutating func popDue(_ now: UInt64) -> (() -> Void)? {
        guard let first = entries.first, first.deadline <= now else { return nil }
        entries.removeFirst()
        return first.action
    }
}
