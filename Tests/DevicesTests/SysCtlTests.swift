import Devices
import GuestMemory
import PVMMABI
import Synchronization
import Testing

final class LevelHistory: InterruptLine {
    let levels = Mutex<[Bool]>([])
    func set(_ level: Bool) { levels.withLock { $0.append(level) } }
}

@Suite struct SysCtlTests {
    func out32(_ d: SystemControl, _ offset: UInt16, _ v: UInt32) -> DeviceAction {
        withUnsafeBytes(of: v.littleEndian) { d.write(offset: offset, from: $0) }
    }

    func in32(_ d: SystemControl, _ offset: UInt16) -> UInt32 {
        var v: UInt32 = 0
        withUnsafeMutableBytes(of: &v) { d.read(offset: offset, into: $0) }
        return v
    }

    @Test func powerButtonLatchesRaisesAnEdgeAndIsAcknowledged() {
        let line = LevelHistory()
        let d = SystemControl(irq: line)
        #expect(in32(d, 0) == SysCtl.signature)
        #expect(in32(d, SysCtl.eventsOffset) == 0)
        d.pressPowerButton()
        #expect(line.levels.withLock { $0 } == [true, false])
        #expect(in32(d, SysCtl.eventsOffset) == SysCtl.eventPowerButton)
        #expect(out32(d, SysCtl.eventsOffset, SysCtl.eventPowerButton) == .none)
        #expect(in32(d, SysCtl.eventsOffset) == 0)
        d.pressPowerButton()
        d.reset()
        #expect(in32(d, SysCtl.eventsOffset) == 0)
    }

    @Test func powerOffNeedsAFull32BitWrite() {
        let d = SystemControl()
        #expect(out32(d, 0, 42) == .powerOff(status: 42))
        let byte: UInt8 = 1
        #expect(withUnsafeBytes(of: byte) { d.write(offset: 0, from: $0) } == .none)
    }

    @Test func panicReportIsReadThroughGuestMemory() throws {
        let mem = try GuestMemory(size: 1 << 20)
        let d = SystemControl(memory: mem)
        for (i, v) in [UInt64(14), 2, 0x1013d2, 0x7000_0000_0000].enumerated() { try mem.write(v, at: 0x8000 + UInt64(i * 8)) }
        #expect(out32(d, SysCtl.panicOffset, 0x8000) == .panicked(GuestPanic(vector: 14, errorCode: 2, rip: 0x1013d2, cr2: 0x7000_0000_0000)))
        // A report outside RAM (or straddling its end) is still a panic, with nothing known.
        #expect(out32(d, SysCtl.panicOffset, 0xFFFF_FFF0) == .panicked(GuestPanic()))
        #expect(out32(d, SysCtl.panicOffset, UInt32((1 << 20) - 8)) == .panicked(GuestPanic()))
        // Without guest memory (unit use) likewise.
        #expect(out32(SystemControl(), SysCtl.panicOffset, 0x8000) == .panicked(GuestPanic()))
    }
}
