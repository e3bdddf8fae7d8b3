import Foundation
import Testing

/// Snapshot and restore of pvos on real KVM (docs/snapshot.md): through the control
/// socket's `snapshot`, then `pvmm-vmm --restore` / `pvmm run --restore`. Every wait is
/// bounded (ControlConnection deadlines, Child.wait timeouts).
@Suite(.serialized) struct SnapshotTests {
    /// A fresh directory for a snapshot (removed by the caller's defer).
    static func scratch(_ name: String) throws -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("pvmm-snap-\(name)-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    static func snapshot(_ vm: ControlledVM, to dir: String) throws -> [String: Any] {
        let r = try vm.request(#"{"op":"snapshot","path":"\#(dir)"}"#, timeout: 30)
        guard r["ok"] as? Bool == true else { throw HarnessError(description: "snapshot: \(r)") }
        return r
    }

    /// A fresh directory and, in it, `snap`: a snapshot of pvos at its prompt (the VM
    /// that took it has ended).
    static func bootedSnapshot(_ name: String) throws -> (dir: String, snap: String) {
        let dir = try scratch(name)
        let snap = dir + "/snap"
        let vm = try ControlledVM()
        _ = try vm.waitForPrompt()
        _ = try snapshot(vm, to: snap)
        try end(vm)
        return (dir, snap)
    }

    static func uptime(_ c: ControlConnection) throws -> Double {
        let out = try c.command("uptime")
        guard let r = out.range(of: "uptime: "), let v = Double(out[r.upperBound...].prefix(while: { $0 != " " })) else {
            throw HarnessError(description: "no uptime in \(out.debugDescription)")
        }
        return v
    }

    static func end(_ vm: ControlledVM) throws {
        _ = try? vm.request(#"{"op":"kill"}"#)
        _ = try vm.child.wait(timeout: 10)
    }

    @Test func restoredVMRunsOnWithItsDiskAndConsole() throws {
        let dir = try Self.scratch("disk")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var image = [UInt8](repeating: 0, count: 4 << 20)
        for i in image.indices { image[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 13) }
        let disk = dir + "/disk.img"
        try Data(image).write(to: URL(fileURLWithPath: disk))
        let snap = dir + "/snap"

        let vm = try ControlledVM(["disks": [["path": disk]]])
        let con = try vm.waitForPrompt()
        let expected = "crc32 \(hex8(crc32(image[0..<(64 * 512)])))"
        #expect(try con.command("blk read 0 0 64").contains(expected))
        let before = try Self.uptime(con)
        let r = try Self.snapshot(vm, to: snap)
        #expect(r["state"] as? String == "running")
        // The original runs on after its snapshot.
        #expect(try con.command("echo still here").contains("still here"))
        try Self.end(vm)

        // Sparse: 128 MiB of RAM, a booted pvos touches a few hundred KiB.
        var st = stat()
        #expect(stat(snap + "/memory", &st) == 0 && st.st_size == 128 << 20)
        #expect(st.st_blocks * 512 < 16 << 20, "memory image uses \(st.st_blocks * 512) bytes on disk")

        let clone = try ControlledVM(restoring: snap)
        let c = try clone.attach(replay: false)
        #expect(try c.command("echo restored").contains("restored\r\n"))
        #expect(try Self.uptime(c) > before)
        #expect(try c.command("info").contains("platform: pvm-native"))
        #expect(try c.command("blk read 0 0 64").contains(expected))
        let wrote = try c.command("blk write 0 8 8 77")
        #expect(try c.command("blk flush 0").contains("flushed"))
        try Self.end(clone)
        let after = try [UInt8](Data(contentsOf: URL(fileURLWithPath: disk)))
        let pattern = guestPattern(seed: 77, count: 8 * 512)
        #expect(Array(after[(8 * 512)..<(16 * 512)]) == pattern)
        #expect(wrote.contains("crc32 \(hex8(crc32(pattern)))"), "\(wrote)")

        // The disk changed since the snapshot: refused, naming it, unless --force-disks.
        let (status, err) = try runPVMMToEnd(["--restore", snap])
        #expect(status == 2)
        #expect(err.contains("disk 0 (\(disk)) changed since the snapshot"), "\(err)")
        let forced = try ControlledVM(restoring: snap, extra: ["--force-disks"])
        #expect(try forced.attach(replay: false).command("echo forced").contains("forced\r\n"))
        try Self.end(forced)
    }

    /// Ten clones of one snapshot at once: each answers on its own console, and their RAM
    /// is the one shared file mapping (private dirty pages only where the guest wrote).
    @Test func tenClonesShareTheSnapshotMemory() throws {
        let (dir, snap) = try Self.bootedSnapshot("clones")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let clones = try (0..<10).map { _ in try ControlledVM(restoring: snap) }
        let consoles = try clones.map { try $0.attach(replay: false) }
        for (i, c) in consoles.enumerated() {
            #expect(try c.command("echo clone-\(i)").contains("clone-\(i)\r\n"))
        }
        var sharedClean = 0
        for clone in clones {
            let m = try Self.mapping(pid: clone.child.pid, file: snap + "/memory")
            #expect(m.size == 128 << 10, "mapping of \(m.size) KiB")
            // A clone's own pages: what the guest wrote since the restore (the shell's
            // buffers, its stack, the console rings), far less than what it reads.
            #expect(m.privateDirty < 4 << 10, "\(m.privateDirty) KiB private dirty")
            sharedClean += m.sharedClean
        }
        #expect(sharedClean > 0, "no page of the snapshot is shared between clones")

        // A paused clone's snapshot leaves it paused; a snapshot of a clone (RAM a private
        // file mapping) restores too; a clone reboots into a fresh boot of its kernel.
        #expect(try clones[0].request(#"{"op":"pause"}"#)["state"] as? String == "paused")
        let snap2 = dir + "/snap2"
        #expect(try Self.snapshot(clones[0], to: snap2)["state"] as? String == "paused")
        #expect(try clones[0].request(#"{"op":"status"}"#)["state"] as? String == "paused")
        _ = try clones[0].request(#"{"op":"resume"}"#)
        #expect(try consoles[0].command("echo resumed").contains("resumed\r\n"))
        let second = try ControlledVM(restoring: snap2)
        #expect(try second.attach(replay: false).command("echo second generation").contains("second generation\r\n"))
        try Self.end(second)
        let mark = consoles[1].stream.count
        _ = try clones[1].request(#"{"op":"reboot"}"#, timeout: 20)
        _ = try consoles[1].expect("pvos> ", after: mark, timeout: 20)
        #expect(try consoles[1].command("echo rebooted").contains("rebooted\r\n"))
        #expect(try consoles[1].command("uptime").contains("uptime: 0."))
        for c in clones { try Self.end(c) }
    }

    /// KiB fields of the smaps entry that maps `file`.
    static func mapping(pid: pid_t, file: String) throws -> (size: Int, privateDirty: Int, sharedClean: Int) {
        // procfs files report size 0: read to EOF, not by the stat size.
        let fd = open("/proc/\(pid)/smaps", O_RDONLY)
        guard fd >= 0 else { throw HarnessError(description: "open smaps of \(pid): errno \(errno)") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            bytes += chunk[..<n]
        }
        let text = String(decoding: bytes, as: UTF8.self)
        var inside = false
        var m = (size: 0, privateDirty: 0, sharedClean: 0)
        var found = false
        for line in text.split(separator: "\n") {
            if line.first.map({ $0.isHexDigit }) == true && line.contains("-") && line.split(separator: " ").count >= 5 {
                inside = line.hasSuffix(" " + file) || line.hasSuffix(file)
                if inside { found = true }
                continue
            }
            guard inside else { continue }
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, let v = Int(parts[1]) else { continue }
            switch parts[0] {
            case "Size:": m.size = v
            case "Private_Dirty:": m.privateDirty = v
            case "Shared_Clean:": m.sharedClean = v
            default: break
            }
        }
        guard found else { throw HarnessError(description: "no mapping of \(file) in /proc/\(pid)/smaps") }
        return m
    }

    /// Requests in flight when the snapshot is taken are completed into the used ring
    /// first: both the original and the restored guest finish `blk bench` with every
    /// request answered once (a lost one stalls it, a duplicate breaks its count: either
    /// ends in "device failure").
    @Test func snapshotDuringBlockBenchLosesNothing() throws {
        let dir = try Self.scratch("bench")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let disk = dir + "/disk.img"
        // Real data (a hole reads at once) that is dropped from the page cache while the
        // bench runs, so reads are on the io_uring, in flight, when the snapshot is taken.
        var image = [UInt8](repeating: 0, count: 32 << 20)
        for i in stride(from: 0, to: image.count, by: 64) { image[i] = UInt8(truncatingIfNeeded: i >> 6) | 1 }
        try Data(image).write(to: URL(fileURLWithPath: disk))
        let fd = open(disk, O_RDONLY)
        defer { close(fd) }
        fsync(fd)
        let snap = dir + "/snap"
        let vm = try ControlledVM(["disks": [["path": disk]]])
        let con = try vm.waitForPrompt()
        let mark = con.stream.count
        con.send("blk bench 0 read rand 4096 32 6\n")
        // Snapshots until one finds requests in flight on the host (usually the first).
        var settled = 0
        var taken = 0
        while settled == 0 && taken < 40 {
            for _ in 0..<5 {
                _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
                usleep(10_000)
            }
            settled = try Self.snapshot(vm, to: snap)["settled_requests"] as? Int ?? 0
            taken += 1
        }
        #expect(settled > 0, "no snapshot of \(taken) caught a block request in flight")
        let out = try con.expect("pvos> ", after: mark, timeout: 20)
        #expect(out.contains(" 0 errors"), "\(out)")
        #expect(!out.contains("device failure"))
        try Self.end(vm)

        // Replay: the restored guest may finish before the console is attached (its
        // deadline passed while it was saved); the ring's history ends mid-bench.
        let clone = try ControlledVM(restoring: snap)
        let c = try clone.attach(replay: true)
        let restored = try c.expect(" us p99 ", timeout: 20)
        #expect(restored.contains(" 0 errors"), "\(restored)")
        #expect(!restored.contains("device failure"))
        // The bench's own prompt first, so the next command's output is not mistaken for it.
        let text = c.text
        if let p = text.range(of: " us p99 ", options: .backwards) {
            _ = try c.expect("pvos> ", after: text.utf8.distance(from: text.startIndex, to: p.upperBound))
        }
        #expect(try c.command("echo after").contains("after\r\n"))
        try Self.end(clone)
    }

    /// Truncated, corrupted (a byte flipped in each section), wrong-version and
    /// incomplete snapshots: status 2 and a sentence, never a crash.
    @Test func corruptSnapshotsAreRefusedClearly() throws {
        let (dir, snap) = try Self.bootedSnapshot("corrupt")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = try [UInt8](Data(contentsOf: URL(fileURLWithPath: snap + "/state")))

        func attempt(_ bytes: [UInt8], memory: Bool = true) throws -> (Int32, String) {
            let bad = dir + "/bad-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: bad, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: bad) }
            try Data(bytes).write(to: URL(fileURLWithPath: bad + "/state"))
            if memory { try FileManager.default.linkItem(atPath: snap + "/memory", toPath: bad + "/memory") }
            return try runPVMMToEnd(["--restore", bad])
        }

        // Section boundaries: a byte inside each section's payload.
        var offsets: [Int] = []
        var o = 24
        while o + 16 <= state.count {
            let len = state[(o + 4)..<(o + 12)].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
            if len > 0 { offsets.append(o + 16 + len / 2) }
            offsets.append(o)  // the tag
            o += 16 + len
        }
        // DEFN MACH VCPU IRQC CLCK LEGA VIRT CONS: a tag and a payload byte each.
        #expect(offsets.count == 16, "\(offsets.count) places in \(state.count) bytes")
        for off in offsets {
            var b = state
            b[off] ^= 0x40
            let (status, err) = try attempt(b)
            #expect(status == 2, "flip at \(off): \(status) \(err)")
            #expect(err.contains("snapshot"), "flip at \(off): \(err)")
        }
        for cut in [0, 10, 23, state.count / 2, state.count - 1] {
            let (status, err) = try attempt(Array(state[..<cut]))
            #expect(status == 2 && err.contains("truncated"), "cut at \(cut): \(status) \(err)")
        }
        var v = state
        v[8] = 2
        let (vs, ve) = try attempt(v)
        #expect(vs == 2 && ve.contains("format version 2 is not supported"), "\(ve)")
        var f = state
        f[12] = 2  // hardware KVM, with a header CRC that matches again
        let crc = crc32(f[0..<20])
        for i in 0..<4 { f[20 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
        let (fs, fe) = try attempt(f)
        #expect(fs == 2 && fe.contains("hardware KVM"), "\(fe)")
        let (ms, me) = try attempt(state, memory: false)
        #expect(ms == 2 && me.contains("memory"), "\(me)")
        let (ns, ne) = try runPVMMToEnd(["--restore", dir + "/nothing-here"])
        #expect(ns == 2 && ne.contains("nothing-here"), "\(ne)")
    }
}
