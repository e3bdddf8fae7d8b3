import Devices
import Testing

@Suite struct ByteFIFOTests {
    @Test func keepsOrderAcrossTheWrapAndRefusesWhenFull() {
        var f = ByteFIFO(capacity: 4)
        let pushed = [f.push(1), f.push(2), f.push(3)]
        let popped = [f.pop(), f.pop()]
        #expect(pushed == [true, true, true] && popped == [1, 2])
        let taken = [UInt8]([4, 5, 6, 7]).withUnsafeBytes { f.append($0) }   // wraps
        #expect(taken == 3 && f.count == 4 && f.room == 0)
        let full = f.push(9)
        #expect(!full)
        var out: [UInt8] = []
        while let b = f.pop() { out.append(b) }
        let after = f.pop()
        #expect(out == [3, 4, 5, 6] && f.isEmpty && after == nil)
    }

    @Test func drainOffersContiguousRunsAndKeepsWhatWasNotTaken() {
        var f = ByteFIFO(capacity: 8)
        _ = [UInt8](0..<6).withUnsafeBytes { f.append($0) }
        for _ in 0..<5 { _ = f.pop() }
        _ = [UInt8](6..<12).withUnsafeBytes { f.append($0) }   // 5..11, wrapped at 8
        var runs: [[UInt8]] = []
        let moved = f.drain { run -> Int in runs.append(Array(run)); return run.count }
        #expect(moved == 7 && runs == [[5, 6, 7], [8, 9, 10, 11]] && f.isEmpty)

        _ = [UInt8](0..<8).withUnsafeBytes { f.append($0) }
        let partial = f.drain { run -> Int in min(run.count, 2) }   // a consumer that fills up
        let next = f.pop()
        #expect(partial == 2 && f.count == 5 && next == 2, "\(partial) \(f.count)")
    }

    struct Refused: Error {}

    @Test func aThrowingConsumerRemovesNothingOfThatRun() {
        var f = ByteFIFO(capacity: 4)
        _ = [UInt8]([1, 2]).withUnsafeBytes { f.append($0) }
        #expect(throws: Refused.self) { try f.drain { (_) throws(Refused) -> Int in throw Refused() } }
        let first = f.pop()
        #expect(f.count == 1 && first == 1)
    }
}
