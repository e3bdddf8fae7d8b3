import PvosTimers
import Testing

/// pvos's timer list (guests/pvos/timers/TimerList.swift), compiled for the host.
@Suite struct TimerListTests {
    final class Log { var fired: [String] = [] }

    func runDue(_ list: inout TimerList, _ now: UInt64) {
        while let a = list.popDue(now) { a() }
    }

    @Test func firesInDeadlineOrderThenSchedulingOrder() {
        var list = TimerList()
        let log = Log()
        _ = list.schedule(at: 30) { log.fired.append("c") }
        _ = list.schedule(at: 10) { log.fired.append("a") }
        _ = list.schedule(at: 20) { log.fired.append("b1") }
        _ = list.schedule(at: 20) { log.fired.append("b2") }
        #expect(list.nextDeadline == 10)
        runDue(&list, 5)
        #expect(log.fired.isEmpty)
        runDue(&list, 20)
        #expect(log.fired == ["a", "b1", "b2"])
        #expect(list.nextDeadline == 30 && list.count == 1)
        runDue(&list, 1000)
        #expect(log.fired == ["a", "b1", "b2", "c"] && list.nextDeadline == nil)
    }

    @Test func cancelRemovesOnlyThatEntry() {
        var list = TimerList()
        let log = Log()
        let a = list.schedule(at: 10) { log.fired.append("a") }
        _ = list.schedule(at: 10) { log.fired.append("b") }
        #expect(a != 0)
        list.cancel(a)
        list.cancel(a)        // twice: nothing
        list.cancel(0)
        runDue(&list, 10)
        #expect(log.fired == ["b"])
    }

    @Test func actionsMayScheduleAndCancelWhileDue() {
        // A retry timer that schedules the next retry (ARP), and one that cancels another.
        final class Box { var list = TimerList() }
        let box = Box()
        let log = Log()
        var victim: UInt32 = 0
        func retry(_ n: Int) {
            log.fired.append("retry\(n)")
            if n < 3 { _ = box.list.schedule(at: UInt64(10 * (n + 1))) { retry(n + 1) } }
        }
        _ = box.list.schedule(at: 10) { retry(1) }
        _ = box.list.schedule(at: 15) { box.list.cancel(victim) }
        victim = box.list.schedule(at: 25) { log.fired.append("victim") }
        while let a = box.list.popDue(100) { a() }
        #expect(log.fired == ["retry1", "retry2", "retry3"])
        #expect(box.list.count == 0)
    }
}
