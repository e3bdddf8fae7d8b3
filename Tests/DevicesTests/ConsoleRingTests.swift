import Devices
import Synchronization
import Testing

final class CountingNotifier: Notifier {
    let count = Atomic<Int>(0)
    func signal() { count.wrappingAdd(1, ordering: .relaxed) }
}

@Suite struct ConsoleRingTests {
    func write(_ r: ConsoleRing, _ s: String) { Array(s.utf8).withUnsafeBytes { r.write($0) } }

    func read(_ r: ConsoleRing, from: UInt64, max: Int = 1 << 20, limit: UInt64 = .max) -> (String, ConsoleRing.ReadResult) {
        var buf = [UInt8](repeating: 0, count: max)
        let res = buf.withUnsafeMutableBytes { r.read(from: from, into: $0, limit: limit) }
        return (String(decoding: buf[..<res.count], as: UTF8.self), res)
    }

    @Test func holdsEverythingUntilFull() {
        let r = ConsoleRing(capacity: 16, wake: CountingNotifier())
        write(r, "hello ")
        write(r, "world")
        #expect(r.end == 11 && r.start == 0 && r.overwritten == 0)
        #expect(String(decoding: r.contents(), as: UTF8.self) == "hello world")
        let (s, res) = read(r, from: 6)
        #expect(s == "world" && res == ConsoleRing.ReadResult(count: 5, skipped: 0, next: 11))
    }

    @Test func overwritesTheOldestAndCountsIt() {
        let r = ConsoleRing(capacity: 8, wake: CountingNotifier())
        write(r, "0123456789")        // wraps
        #expect(r.end == 10 && r.start == 2 && r.overwritten == 2)
        #expect(String(decoding: r.contents(), as: UTF8.self) == "23456789")
        write(r, "abc")
        #expect(String(decoding: r.contents(), as: UTF8.self) == "56789abc")
        // A reader that fell behind skips what was lost and reads the rest in order.
        let (s, res) = read(r, from: 1)
        #expect(s == "56789abc" && res.skipped == 4 && res.next == 13)
        // Reading across the wrap in small pieces gives the same bytes.
        var pos: UInt64 = 5
        var got = ""
        while true {
            let (piece, res) = read(r, from: pos, max: 3)
            if res.count == 0 { break }
            got += piece
            pos = res.next
        }
        #expect(got == "56789abc")
    }

    @Test func aWriteLargerThanTheRingKeepsItsTail() {
        let r = ConsoleRing(capacity: 4, wake: CountingNotifier())
        write(r, "ab")
        write(r, "0123456789")
        #expect(r.end == 12 && String(decoding: r.contents(), as: UTF8.self) == "6789")
    }

    @Test func limitStopsAReader() {
        let r = ConsoleRing(capacity: 32, wake: CountingNotifier())
        write(r, "before|after")
        let (s, res) = read(r, from: 0, limit: 6)
        #expect(s == "before" && res.next == 6)
        let (none, res2) = read(r, from: 6, limit: 6)
        #expect(none.isEmpty && res2.count == 0 && res2.next == 6)
        // Reading at the end returns nothing and stays there.
        let (_, end) = read(r, from: 12)
        #expect(end == ConsoleRing.ReadResult(count: 0, skipped: 0, next: 12))
    }

    @Test func signalsOncePerIdlePeriod() {
        let n = CountingNotifier()
        let r = ConsoleRing(capacity: 64, wake: n)
        for _ in 0..<100 { write(r, "x") }
        #expect(n.count.load(ordering: .relaxed) == 1)
        r.rearm()
        write(r, "y")
        write(r, "z")
        #expect(n.count.load(ordering: .relaxed) == 2)
        write(r, "")  // nothing written: no wake-up
        r.rearm()
        write(r, "")
        #expect(n.count.load(ordering: .relaxed) == 2)
    }

    @Test func concurrentWritersLoseNothingTheRingHolds() async {
        let r = ConsoleRing(capacity: 1 << 20, wake: CountingNotifier())
        await withTaskGroup(of: Void.self) { g in
            for t in 0..<4 {
                g.addTask {
                    let line = Array("writer \(t) line\n".utf8)
                    for _ in 0..<1000 { line.withUnsafeBytes { r.write($0) } }
                }
            }
        }
        let text = String(decoding: r.contents(), as: UTF8.self)
        for t in 0..<4 {
            let lines = text.split(separator: "\n").filter { $0 == "writer \(t) line" }
            #expect(lines.count == 1000)
        }
        #expect(r.end == UInt64(text.utf8.count))
    }
}
