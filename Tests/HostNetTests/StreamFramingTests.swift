#if canImport(Glibc)
import Glibc
#endif
import HostNet
import Testing

@Suite struct StreamFramingTests {
    static func framed(_ frames: [[UInt8]]) -> [UInt8] {
        frames.flatMap { f in
            let n = UInt32(f.count)
            return [UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)] + f
        }
    }

    @Test func splitsFramesAcrossArbitraryChunks() {
        let frames: [[UInt8]] = [Array(repeating: 1, count: 60), Array(0..<255), [7]]
        let stream = Self.framed(frames)
        var r = StreamFrameReader(maxFrame: 1514)
        defer { r.free() }
        var got: [[UInt8]] = []
        // Feed 3 bytes at a time: lengths and frames split across reads.
        var i = 0
        while i < stream.count {
            let chunk = Array(stream[i..<min(i + 3, stream.count)])
            _ = chunk.withUnsafeBytes { r.append($0) }
            i += 3
            while case .frame(let f) = r.nextFrame() {
                got.append(Array(f))
                r.consume()
            }
        }
        #expect(got == frames)
        #expect(r.buffered == 0)
    }

    @Test func zeroAndOversizeLengthsAreCorrupt() {
        for length: UInt32 in [0, 1515, 0xFFFF_FFFF] {
            var r = StreamFrameReader(maxFrame: 1514)
            defer { r.free() }
            let b: [UInt8] = [UInt8(length >> 24), UInt8(truncatingIfNeeded: length >> 16),
                              UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length), 1, 2]
            _ = b.withUnsafeBytes { r.append($0) }
            #expect(r.nextFrame() == .corrupt(length: length))
        }
    }

    @Test func writerKeepsThePartialTailAndFlushesIt() throws {
        var sv: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &sv) == 0)
        defer { close(sv[0]); close(sv[1]) }
        var small: Int32 = 4096
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, 4)
        _ = fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK)
        var w = StreamFrameWriter(maxFrame: 65549)
        defer { w.free() }
        var frame = [UInt8](repeating: 0, count: 60000)
        for i in frame.indices { frame[i] = UInt8(truncatingIfNeeded: i * 7) }
        var sent = 0
        var blocked = false
        frame.withUnsafeMutableBytes { p in
            var v = iovec(iov_base: p.baseAddress, iov_len: p.count)
            for _ in 0..<20 {
                let r = withUnsafePointer(to: &v) { w.send(UnsafeBufferPointer(start: $0, count: 1), to: sv[0]) }
                if r == .wouldBlock { blocked = true; break }
                #expect(r == .done(60000))
                sent += 1
            }
        }
        #expect(blocked && sent >= 1)
        // Drain the peer while flushing: every byte arrives, in frames.
        var r = StreamFrameReader(maxFrame: 65549)
        defer { r.free() }
        var received = 0
        var buf = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<1000 where received < sent {
            _ = w.flush(to: sv[0])
            let n = read(sv[1], &buf, buf.count)
            if n > 0 { _ = buf.withUnsafeBytes { r.append(UnsafeRawBufferPointer(rebasing: $0[..<n])) } }
            while case .frame(let f) = r.nextFrame() {
                #expect(Array(f) == frame)
                received += 1
                r.consume()
            }
        }
        #expect(received == sent)
        #expect(!w.hasPending)
    }
}
