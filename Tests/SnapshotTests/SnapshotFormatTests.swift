import CKVM
import KVM
import Snapshot
import Testing
import Virtio
import VMDefinition

/// A small but complete state: two vCPUs, a console and a disk device, one disk.
func sampleSnapshot() -> VMSnapshot {
    let def = VMConfig(kernel: "/k.elf", memoryMiB: 16, cpus: 2, disks: [DiskConfig(path: "/d.img")])
    var regs = kvm_regs()
    regs.rip = 0x1234
    var chips = [UInt8](repeating: 0, count: ckvm_irqchips_size())
    chips[chips.count / 3] = 1
    chips[2 * chips.count / 3] = 2
    var msrs = [UInt64?](repeating: nil, count: VCPUState.msrIndices.count)
    msrs[VCPUState.msrIndices.firstIndex(of: 0x4B56_4D10)!] = 0x400
    msrs[VCPUState.msrIndices.firstIndex(of: 0x6E0)!] = 99
    let v = VCPUState(regs: regs, sregs: kvm_sregs(), extra: [UInt8](repeating: 7, count: ckvm_vcpu_extra_size()),
                      xstate: [UInt8](repeating: 0, count: ckvm_vcpu_xstate_size()), mpState: 0, msrs: msrs)
    var t = MMIOTransportState()
    t.status = 0x0F
    t.driverFeatures = 1 << 32
    t.queues = [.init(size: 256, ready: true, desc: 0x1000, driver: 0x2000, device: 0x3000,
                      cursors: .init(nextAvail: 7, nextUsed: 5, signalledUsed: 4))]
    return VMSnapshot(flavour: .pvm, definition: def, memorySize: 16 << 20, vcpus: [v, v], irqchips: chips,
                      clockNs: 42, clockRealtimeNs: 43, serial: [1, 2, 3, 4, 5, 6, 7, 8], sysctlEvents: 1,
                      virtio: [.init(slot: 0, deviceType: 3, transport: t)],
                      disks: [.init(device: 1, inode: 2, size: 512, mtimeSeconds: 3, mtimeNanoseconds: 4)],
                      consoleLog: Array("pvos> ".utf8), consoleEnd: 100)
}

/// Whether the reader refuses `bytes` (a Bool, so a failure does not print the whole state).
func refused(_ bytes: [UInt8], host: SnapshotFlavour = .pvm) -> Bool {
    do { _ = try VMSnapshot(parsing: bytes, host: host); return false } catch { return true }
}

@Suite struct SnapshotFormatTests {
    @Test func roundTrip() throws {
        let s = sampleSnapshot()
        let back = try VMSnapshot(parsing: s.encoded(), host: .pvm)
        #expect(back.definition == s.definition)
        #expect(back.vcpus.count == 2)
        #expect(back.vcpus[1].regs.rip == 0x1234)
        #expect(back.vcpus[0].msrs == s.vcpus[0].msrs)
        #expect(back.vcpus[0].extra == s.vcpus[0].extra && back.irqchips == s.irqchips)
        #expect(back.virtio == s.virtio)
        #expect(back.disks == s.disks)
        #expect(back.consoleLog == s.consoleLog && back.consoleEnd == 100)
        #expect(back.clockNs == 42 && back.sysctlEvents == 1 && back.serial == s.serial)
    }

    @Test func crcMatchesZlib() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
    }

    @Test func everyTruncationIsRefused() {
        let bytes = sampleSnapshot().encoded()
        for n in 0..<bytes.count { #expect(refused(Array(bytes[..<n])), "cut at \(n)") }
    }

    /// One flipped byte anywhere (every section, the header) is refused by a checksum,
    /// the magic, the version, the flavour or a length check: never accepted, never a crash.
    @Test func everyFlippedByteIsRefused() {
        let bytes = sampleSnapshot().encoded()
        for i in bytes.indices {
            var b = bytes
            b[i] ^= 0x5A
            #expect(refused(b), "byte \(i) flipped")
        }
    }

    @Test func wrongVersionAndFlavourSayWhat() throws {
        var b = sampleSnapshot().encoded()
        b[8] = 9
        #expect(throws: SnapshotError.version(found: 9)) { try VMSnapshot(parsing: b, host: .pvm) }
        let e = #expect(throws: SnapshotError.self) { try VMSnapshot(parsing: sampleSnapshot().encoded(), host: .hardware) }
        #expect(e?.description.contains("PVM") == true)
        #expect(throws: SnapshotError.notASnapshot("no PVMMSNAP magic")) { try VMSnapshot(parsing: Array("hello, this is not it at all".utf8), host: .pvm) }
    }

    @Test func countsMustMatchTheDefinition() {
        var s = sampleSnapshot()
        s.vcpus.removeLast()
        #expect(refused(s.encoded()))
        s = sampleSnapshot()
        s.memorySize = 32 << 20
        #expect(refused(s.encoded()))
        s = sampleSnapshot()
        s.vcpus[0].mpState = 77
        #expect(refused(s.encoded()))
        s = sampleSnapshot()
        s.disks = []
        #expect(refused(s.encoded()))
    }
}
