import Foundation
import Testing

/// CRC-32 (IEEE, zlib's `crc32`), bitwise: the reference for the guest's `blk read`.
func crc32(_ data: some Collection<UInt8>) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for b in data {
        crc ^= UInt32(b)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return ~crc
}

/// The guest's `blk write` pattern: xorshift32 from SEED (0 -> 1), one byte per step.
func guestPattern(seed: UInt32, count: Int) -> [UInt8] {
    var s = seed == 0 ? 1 : seed
    return (0..<count).map { _ in
        s ^= s << 13; s ^= s >> 17; s ^= s << 5
        return UInt8(s & 0xFF)
    }
}

/// A disk image filled with a deterministic pseudo-random pattern, removed on deinit.
final class DiskImage {
    let path: String
    init(_ name: String, mib: Int = 4) throws {
        var g = SystemRandomNumberGenerator()
        let words = (0..<(mib << 17)).map { _ in g.next() }
        path = try Paths.temporaryFile(name, words.withUnsafeBytes { Array($0) })
    }
    deinit { unlink(path) }
    var bytes: [UInt8] { [UInt8](FileManager.default.contents(atPath: path) ?? Data()) }
}

func hex8(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 8 - s.count) + s
}

/// virtio-blk and virtio-console end to end: pvmm's devices, pvos's drivers, and the bytes
/// in the host file.
@Suite(.serialized) struct BlockTests {
    @Test func hostDataReadsBackWithTheSameCRC() throws {
        let disk = try DiskImage("read.img")
        let vm = try bootPVMM(["--disk", disk.path + ",id=data0"])
        try vm.expect("pvos> ")
        let list = try vm.command("blk")
        #expect(list.contains("blk0:") && list.contains("8192 sectors") && list.contains("rw") && list.contains("id=data0"), "\(list)")
        let image = disk.bytes
        let out = try vm.command("blk read 0 0 8")
        #expect(out.contains("crc32 \(hex8(crc32(image[0..<4096])))"), "\(out)")
        let out2 = try vm.command("blk read 0 100 64")
        #expect(out2.contains("crc32 \(hex8(crc32(image[(100 * 512)..<(164 * 512)])))"), "\(out2)")
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    /// pvmm routes virtio interrupts as MSIs and tells pvos so (`pvmm_msi=`): pvos leaves
    /// the IOAPIC alone, and requests still complete on interrupts (`cpus` counts them).
    @Test func completionsArriveAsMSIs() throws {
        let disk = try DiskImage("msi.img")
        let vm = try bootPVMM(["--disk", disk.path])
        try vm.expect("pvos> ")
        let info = try vm.command("info")
        #expect(info.contains(", devices msi\r\n"), "\(info)")
        func irqs() throws -> Int {
            let out = try vm.command("cpus")
            guard let r = out.range(of: " irqs "), let n = Int(out[r.upperBound...].prefix(while: \.isNumber)) else { return -1 }
            return n
        }
        let before = try irqs()
        let out = try vm.command("blk read 0 8 8")
        #expect(out.contains("crc32 \(hex8(crc32(disk.bytes[(8 * 512)..<(16 * 512)])))"), "\(out)")
        #expect(try irqs() > before)
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
    }

    /// Polling on both sides (docs/devices.md, "Polling"): at depth 1 the device catches
    /// requests without a notification and the driver catches completions without an
    /// interrupt, some of the time at least; with `--poll-us 0` every request is one
    /// notification and one interrupt. Counts, not times.
    @Test(arguments: [50, 0]) func pollingSavesNotificationsAndInterrupts(pollUs: Int) throws {
        let disk = try DiskImage("poll.img")
        let vm = try Child([Paths.pvmm, "run", "--poll-us", String(pollUs), "--kernel", Paths.guest, "--disk", disk.path],
                           environment: ["PVMM_STATS": "1"])
        try vm.expect("pvos> ")
        let out = try vm.command("blk bench 0 read rand 4096 1 1")
        #expect(out.contains(" 0 errors"), "\(out)")
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
        guard let line = vm.errorText.split(separator: "\n").first(where: { $0.hasPrefix("pvmm-stats:") }) else {
            Issue.record("no stats: \(vm.errorText)")
            return
        }
        var stats: [String: Int] = [:]
        for kv in line.split(separator: " ").dropFirst() {
            let p = kv.split(separator: "=")
            if p.count == 2 { stats[String(p[0])] = Int(p[1]) }
        }
        let requests = stats["blk0.requests"] ?? 0, kicks = stats["blk0.notifications"] ?? 0, irqs = stats["blk0.interrupts"] ?? 0
        #expect(requests > 1000, "\(line)")
        if pollUs == 0 {
            // (A request posted while the device re-checks its ring needs no kick.)
            #expect(kicks * 100 >= requests * 99, "\(line)")
            #expect(irqs * 100 >= requests * 99, "\(line)")
        } else {
            #expect(irqs * 10 < requests * 9, "\(line)")
            #expect(kicks < requests, "\(line)")
        }
    }

    @Test func guestPatternLandsAtTheRightOffsets() throws {
        let disk = try DiskImage("write.img")
        let before = disk.bytes
        let vm = try bootPVMM(["--disk", disk.path])
        try vm.expect("pvos> ")
        let out = try vm.command("blk write 0 8 16 42")
        let pattern = guestPattern(seed: 42, count: 16 * 512)
        #expect(out.contains("crc32 \(hex8(crc32(pattern)))"), "\(out)")
        #expect(try vm.command("blk flush 0").contains("flushed"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
        let after = disk.bytes
        // Bool first: a failing #expect on two 8 KiB arrays would print both in full.
        let written = Array(after[(8 * 512)..<(24 * 512)]) == pattern
        let headKept = after[..<(8 * 512)] == before[..<(8 * 512)]
        let tailKept = after[(24 * 512)...] == before[(24 * 512)...]
        #expect(written, "the guest's pattern is not at sectors 8..<24")
        #expect(headKept && tailKept, "bytes outside the written range changed")
    }

    @Test func readOnlyDiskRefusesWrites() throws {
        let disk = try DiskImage("ro.img")
        let before = disk.bytes
        let vm = try bootPVMM(["--disk", disk.path + ",readonly"])
        try vm.expect("pvos> ")
        #expect(try vm.command("blk").contains("ro"))
        #expect(try vm.command("blk write 0 0 8 7").contains("I/O error"))
        #expect(try vm.command("blk read 0 0 8").contains("crc32 \(hex8(crc32(before[0..<4096])))"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
        let unchanged = disk.bytes == before
        #expect(unchanged, "a read-only image changed")
    }

    @Test func flushedDataSurvivesKill9() throws {
        let disk = try DiskImage("kill.img")
        let vm = try bootPVMM(["--disk", disk.path])
        try vm.expect("pvos> ")
        _ = try vm.command("blk write 0 0 32 9")
        #expect(try vm.command("blk flush 0").contains("flushed"))
        kill(vm.pid, SIGKILL)
        _ = try? vm.wait()
        let durable = Array(disk.bytes[0..<(32 * 512)]) == guestPattern(seed: 9, count: 32 * 512)
        #expect(durable, "flushed data is not in the image after kill -9")
    }

    @Test func hostileGuestPutsDeviceInNeedsResetAndPVMMSurvives() throws {
        let disk = try DiskImage("evil.img")
        let vm = try bootPVMM(["--disk", disk.path])
        try vm.expect("pvos> ")
        let out = try vm.command("virtio evil", timeout: 30)
        #expect(out.components(separatedBy: "needs-reset").count - 1 == 3, "\(out)")
        #expect(out.contains("virtio evil: done"))
        // The VMM logged each rejection and still serves the re-initialised device.
        #expect(try vm.command("blk read 0 0 8").contains("crc32 \(hex8(crc32(disk.bytes[0..<4096])))"))
        vm.send("poweroff\n")
        #expect(try vm.wait() == 0)
        // One sentence per rejection: the queue, hex addresses, a loop called a loop.
        let log = vm.errorText
        #expect(log.contains("pvmm: virtio-blk blk0: DEVICE_NEEDS_RESET: queue 0: chain 0 loops back to descriptor "), "\(log)")
        #expect(log.contains("queue 0: chain 0 has a buffer at 0x7f0000000000 ("), "\(log)")
        #expect(log.contains("queue 0: avail.idx "), "\(log)")
    }

    @Test func writableImageIsLockedAgainstASecondVM() throws {
        let disk = try DiskImage("lock.img")
        let first = try bootPVMM(["--disk", disk.path])
        try first.expect("pvos> ")
        let second = try bootPVMM(["--disk", disk.path])
        second.closeInput()
        #expect(try second.wait() == 2)
        #expect(second.errorText.contains("locked"), "\(second.errorText)")
        first.send("poweroff\n")
        #expect(try first.wait() == 0)
    }

    @Test func missingDiskIsAStartupError() throws {
        let c = try bootPVMM(["--disk", "/nonexistent/disk.img"])
        c.closeInput()
        #expect(try c.wait() == 2)
        #expect(c.errorText.contains("/nonexistent/disk.img"))
    }

    @Test func virtioConsoleCarriesTheShellWithFewerExits() throws {
        func exits(_ console: String) throws -> (Int, String) {
            let vm = try Child([Paths.pvmm, "run", "--kernel", Paths.guest, "--console", console], environment: ["PVMM_STATS": "1"])
            try vm.expect("pvos> ")
            var out = ""
            for i in 0..<20 { out += try vm.command("echo line \(i) of the virtio console test") }
            vm.send("poweroff\n")
            #expect(try vm.wait() == 0)
            // All userspace exits (port and MMIO): the virtio console's notifies and
            // interrupts go through ioeventfd/irqfd and should not show up here.
            let stats = vm.errorText.split(whereSeparator: { $0 == " " || $0.isNewline }).first { $0.hasPrefix("exits=") }.flatMap { Int($0.dropFirst(6)) }
            return (try #require(stats, "\(vm.errorText)"), out)
        }
        let (serialExits, serialOut) = try exits("serial")
        let (virtioExits, virtioOut) = try exits("virtio")
        #expect(serialOut.contains("line 19 of the virtio console test"))
        #expect(virtioOut.contains("line 19 of the virtio console test"))
        #expect(virtioExits * 4 < serialExits, "virtio console: \(virtioExits) exits, serial: \(serialExits)")
    }

    @Test func qemuVirtioBlkDeviceReadsTheSameCRC() throws {
        let disk = try DiskImage("qemu.img")
        let vm = try QEMUTests.boot(["-global", "virtio-mmio.force-legacy=false",
                                     "-drive", "id=d0,file=\(disk.path),format=raw,if=none",
                                     "-device", "virtio-blk-device,drive=d0,serial=qemu0"])
        try vm.expect("pvos> ", timeout: 30)
        #expect(try vm.command("blk", timeout: 30).contains("blk0:"))
        let out = try vm.command("blk read 0 0 8", timeout: 30)
        #expect(out.contains("crc32 \(hex8(crc32(disk.bytes[0..<4096])))"), "\(out)")
        _ = try vm.command("blk write 0 16 8 5", timeout: 30)
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
        let written = Array(disk.bytes[(16 * 512)..<(24 * 512)]) == guestPattern(seed: 5, count: 8 * 512)
        #expect(written, "QEMU: the guest's pattern is not at sectors 16..<24")
    }
}

/// pvos's virtio-console driver against QEMU's virtio-serial-device (a second,
/// independent implementation): the shell comes up on the virtconsole, not the 8250.
@Suite struct QEMUConsoleTests {
    @Test func shellRunsOnQEMUsVirtconsole() throws {
        let qemu = "/usr/bin/qemu-system-x86_64"
        let vm = try Child([qemu, "-M", "microvm,x-option-roms=off,rtc=off,pit=off,pic=off",
                            "-enable-kvm", "-cpu", "host,-arch-capabilities", "-m", "128",
                            "-no-reboot", "-nodefaults", "-display", "none", "-monitor", "none",
                            "-serial", "null", "-global", "virtio-mmio.force-legacy=false",
                            "-device", "virtio-serial-device", "-chardev", "stdio,id=c0",
                            "-device", "virtconsole,chardev=c0", "-kernel", Paths.guest])
        try vm.expect("pvos> ", timeout: 30)
        #expect(try vm.command("echo over virtio-serial", timeout: 30).contains("over virtio-serial"))
        #expect(try vm.command("info", timeout: 30).contains("platform: pvm-native"))
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }
}
