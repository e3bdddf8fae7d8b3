import Devices
import GuestMemory
import Testing

/// Port-I/O exits with a count (`rep outs/ins`) and the IRQ probe's mailbox: the pieces
/// the fuzz targets Scripts/fuzz-bus drives, with fixed inputs.
struct PortStringTests {
    @Test func repOutsSendsEveryByteInOrder() throws {
        let sink = RecordingSink()
        let bus = try PortBus([.init(base: 0x3F8, length: 8, device: Serial8250(sink: sink))])
        let action = Array("hello".utf8).withUnsafeBytes { bus.write(port: 0x3F8, size: 1, count: 5, from: $0) }
        #expect(action == .none)
        #expect(sink.text == "hello")
    }

    @Test func repOutsStopsAtTheAccessThatResets() throws {
        let sink = RecordingSink()
        let bus = try PortBus([.init(base: 0x3F8, length: 8, device: Serial8250(sink: sink)),
                               .init(base: 0x60, length: 5, device: I8042())])
        // 0xFE to port 0x64 is the i8042 reset: a 3-byte string stops at the first one.
        let action = [UInt8](repeating: 0xFE, count: 3).withUnsafeBytes { bus.write(port: 0x64, size: 1, count: 3, from: $0) }
        #expect(action == .reset)
    }

    @Test func badSizeOrShortDataRunsNothing() throws {
        let sink = RecordingSink()
        let bus = try PortBus([.init(base: 0x3F8, length: 8, device: Serial8250(sink: sink))])
        let bytes = [UInt8](repeating: 0x41, count: 8)
        for (size, count) in [(3, 1), (8, 1), (0, 4), (1, 9), (4, 3), (2, Int.max)] {
            let action = bytes.withUnsafeBytes { bus.write(port: 0x3F8, size: size, count: count, from: $0) }
            #expect(action == .none)
        }
        #expect(sink.text == "")
        var into = [UInt8](repeating: 7, count: 8)
        into.withUnsafeMutableBytes { bus.read(port: 0x2F8, size: 4, count: 3, into: $0) }
        #expect(into == [UInt8](repeating: 7, count: 8))
        into.withUnsafeMutableBytes { bus.read(port: 0x2F8, size: 2, count: 4, into: $0) }
        #expect(into == [UInt8](repeating: 0xFF, count: 8))  // unclaimed ports float high
    }

    @Test func mailboxStoresOnlyInsideRAM() throws {
        let memory = try GuestMemory(size: 64 << 10, holeStart: 32 << 10, holeEnd: 48 << 10)
        var mailbox = ProbeMailbox()
        func set(_ address: UInt64) {
            withUnsafeBytes(of: UInt32(truncatingIfNeeded: address)) { mailbox.write(offset: ProbeMailbox.lowOffset, from: $0) }
            withUnsafeBytes(of: UInt32(truncatingIfNeeded: address >> 32)) { mailbox.write(offset: ProbeMailbox.highOffset, from: $0) }
        }
        set(0x1000)
        #expect(mailbox.address == 0x1000 && mailbox.store(42, in: memory))
        #expect(try memory.read(at: 0x1000) as UInt64 == 42)
        for bad: UInt64 in [(32 << 10) - 4, 40 << 10, (80 << 10) - 7, 0xFFFF_FFFF_FFFF_FFFC] {
            set(bad)
            #expect(mailbox.address == bad)
            #expect(!mailbox.store(42, in: memory))
        }
    }
}
