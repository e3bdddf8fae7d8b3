#if canImport(Glibc)
import Glibc
#endif
import CKVM
import Devices
import GuestMemory
import KVM
import Snapshot
import VMDefinition

/// A snapshot directory opened for a restore (docs/snapshot.md): `state` decoded and
/// checked, `memory` open for the copy-on-write mapping.
public final class SnapshotImage: @unchecked Sendable {
    public static let stateFile = "state"
    public static let memoryFile = "memory"

    public let directory: String
    public let snapshot: VMSnapshot
    /// The memory image, read-only; open for the VM's life (the mapping keeps the file,
    /// the fd is closed with this object).
    public let memoryFD: Int32
    /// `--force-disks`: restore even when a disk changed since the snapshot.
    public let forceDisks: Bool

    /// Reads and checks DIR/state, opens DIR/memory and checks its size. Every problem
    /// is a `.snapshot` error (status 2) naming the file and field.
    public init(directory: String, forceDisks: Bool = false) throws(VMMError) {
        self.directory = directory
        self.forceDisks = forceDisks
        let statePath = directory + "/" + Self.stateFile
        let bytes: [UInt8]
        do { bytes = try readSmallFile(statePath, limit: SnapshotFormat.maxStateBytes) } catch { throw .snapshot(error) }
        // The flavour is checked again against the probed host when the machine exists.
        do { snapshot = try VMSnapshot(parsing: bytes, host: .ofThisHost) } catch { throw .snapshot(error) }
        let memoryPath = directory + "/" + Self.memoryFile
        let fd = open(memoryPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .snapshot(.file(path: memoryPath, message: String(cString: strerror(errno)))) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, UInt64(st.st_size) == snapshot.memorySize else {
            close(fd)
            throw .snapshot(.memory("\(memoryPath) is \(st.st_size) bytes, the snapshot's RAM is \(snapshot.memorySize)"))
        }
        memoryFD = fd
    }

    deinit { close(memoryFD) }

    /// Each disk must be the file the snapshot flushed, unchanged (device, inode, size,
    /// modification time), or the guest's cached view of it would be wrong.
    func checkDisks(_ disks: [DiskConfig]) throws(VMMError) {
        guard !forceDisks else { return }
        for (i, d) in disks.enumerated() where i < snapshot.disks.count {
            let saved = snapshot.disks[i]
            var st = stat()
            guard stat(d.path, &st) == 0 else {
                throw .snapshot(.diskChanged(index: i, path: d.path, what: String(cString: strerror(errno))))
            }
            let now = diskIdentity(st)
            var what: [String] = []
            if now.device != saved.device || now.inode != saved.inode { what.append("another file (device/inode)") }
            if now.size != saved.size { what.append("size \(saved.size) -> \(now.size) bytes") }
            if now.mtimeSeconds != saved.mtimeSeconds || now.mtimeNanoseconds != saved.mtimeNanoseconds { what.append("modified") }
            if !what.isEmpty { throw .snapshot(.diskChanged(index: i, path: d.path, what: what.joined(separator: ", "))) }
        }
    }
}

/// Where a snapshot goes: a directory the VMM creates its files in, or two files a
/// client made and passed with the request (SCM_RIGHTS), which it renames afterwards.
enum SnapshotTarget {
    case directory(String)
    case files(memory: Int32, state: Int32)
}

/// What a snapshot cost: bytes of RAM data written, the state file's size, the time the
/// vCPUs stood still.
public struct SnapshotResult: Sendable {
    public let memoryBytes: UInt64
    public let stateBytes: Int
    public let pausedNs: UInt64
    /// Block requests that were in flight on the host and completed before the state was read.
    public let settledRequests: Int
}

func diskIdentity(_ st: stat) -> VMSnapshot.DiskIdentity {
    VMSnapshot.DiskIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: UInt64(st.st_size),
                            mtimeSeconds: Int64(st.st_mtim.tv_sec), mtimeNanoseconds: Int64(st.st_mtim.tv_nsec))
}

extension HostFlavour {
    var snapshotFlavour: SnapshotFlavour { self == .pvm ? .pvm : .hardware }
}

/// Reads a whole regular file of at most `limit` bytes.
func readSmallFile(_ path: String, limit: Int) throws(SnapshotError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .file(path: path, message: String(cString: strerror(errno))) }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { throw .file(path: path, message: "not a regular file") }
    guard st.st_size <= limit else { throw .file(path: path, message: "\(st.st_size) bytes is larger than a snapshot state file") }
    var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + off, $0.count - off, off_t(off)) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw .truncated("\(path) could be read only to byte \(off)") }
        off += n
    }
    return bytes
}

extension VM {
    // MARK: Snapshot

    /// Saves the VM into `directory` (created if missing): `memory` (a sparse RAM image)
    /// and `state` (vCPUs, irqchip, clock, devices, disks, the definition). A running VM
    /// is parked for the duration and runs again afterwards; a paused one stays paused.
    /// Block requests in flight are completed first and the disks flushed, so the
    /// snapshot and the images agree. `consoleLog`/`consoleEnd`: the console ring.
    /// `writer`: the thread that creates the files (the control socket's; without it the
    /// caller writes them, which its seccomp role may not allow).
    func snapshot(to target: SnapshotTarget, consoleLog: [UInt8] = [], consoleEnd: UInt64 = 0,
                  writer: SnapshotWriter?) throws(VMMError) -> SnapshotResult {
        try withOperation { () throws(VMMError) -> SnapshotResult in
            try check(.snapshot)
            let wasRunning = state == .running
            let t0 = monotonicNanoseconds()
            if wasRunning {
                parkVCPUs()
                for loop in deviceLoops { loop.quiesce() }
            }
            defer {
                if wasRunning {
                    for loop in deviceLoops { loop.resume() }
                    unparkVCPUs()
                }
            }
            let (snap, settled) = try capture(consoleLog: consoleLog, consoleEnd: consoleEnd)
            let result: (UInt64, Int)
            if let writer { result = try writer.run { () throws(VMMError) -> (UInt64, Int) in try self.write(snap, to: target) } }
            else { result = try write(snap, to: target) }
            return SnapshotResult(memoryBytes: result.0, stateBytes: result.1, pausedNs: monotonicNanoseconds() - t0,
                                  settledRequests: settled)
        }
    }

    /// Reads every piece of state (vCPUs parked, devices quiesced).
    /// Also returns how many block requests settling completed.
    func capture(consoleLog: [UInt8], consoleEnd: UInt64) throws(VMMError) -> (VMSnapshot, Int) {
        // Devices first: settling block I/O may complete requests (used ring, an
        // interrupt into the irqchip) that the rest must include.
        var devices: [VMSnapshot.VirtioDevice] = []
        var settled = 0
        for d in virtioDevices {
            let (state, n) = d.device.savedState()
            devices.append(VMSnapshot.VirtioDevice(slot: d.slot, deviceType: d.device.deviceTypeID, transport: state))
            settled += n
        }
        var identities: [VMSnapshot.DiskIdentity] = []
        for (i, d) in disks.enumerated() {
            guard d.readOnly || d.sync() else { throw .snapshotWrite("disk \(i) (\(d.path)): flush failed: \(String(cString: strerror(errno)))") }
            var st = stat()
            guard fstat(d.fd, &st) == 0 else { throw .snapshotWrite("disk \(i) (\(d.path)): \(String(cString: strerror(errno)))") }
            identities.append(diskIdentity(st))
        }
        do throws(KVMError) {
            var states: [VCPUState] = []
            for ctx in vcpus { states.append(try ctx.vcpu.saveState()) }
            let clock = try vm.clock()
            // KVM_CLOCK_REALTIME (1 << 2): `realtime` is valid.
            let realtime = clock.flags & (1 << 2) != 0 ? clock.realtime : wallClockNanoseconds()
            return (VMSnapshot(flavour: flavour.snapshotFlavour, definition: snapshotDefinition ?? config, memorySize: memory.size, vcpus: states,
                              irqchips: try vm.irqChipState(), clockNs: clock.clock, clockRealtimeNs: realtime,
                              serial: serial.savedRegisters(), sysctlEvents: sysctl.pendingEvents, virtio: devices,
                              disks: identities, consoleLog: consoleLog, consoleEnd: consoleEnd), settled)
        } catch { throw .kvm(error) }
    }

    /// Writes the snapshot to `target`: a directory, or the two files a client made.
    func write(_ snap: VMSnapshot, to target: SnapshotTarget) throws(VMMError) -> (UInt64, Int) {
        switch target {
        case .directory(let d): return try write(snap, to: d)
        case .files(let memoryFD, let stateFD): return try write(snap, memory: memoryFD, state: stateFD)
        }
    }

    /// Into files the client created (a jailed VMM can reach no directory of the host):
    /// each emptied, written and synced; the client renames them into place once the
    /// answer says they are complete.
    func write(_ snap: VMSnapshot, memory memoryFD: Int32, state stateFD: Int32) throws(VMMError) -> (UInt64, Int) {
        for (fd, name) in [(memoryFD, SnapshotImage.memoryFile), (stateFD, SnapshotImage.stateFile)] {
            var st = stat()
            guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, ftruncate(fd, 0) == 0, lseek(fd, 0, SEEK_SET) == 0 else {
                throw .snapshotWrite("the \(name) file passed: \(String(cString: strerror(errno == 0 ? EINVAL : errno)))")
            }
        }
        let written: UInt64
        do { written = try memory.writeImage(to: memoryFD) } catch { throw .snapshotWrite("the memory file passed: \(error)") }
        let bytes = snap.encoded()
        guard fsync(memoryFD) == 0, (bytes.withUnsafeBytes { writeAll(stateFD, $0) }), fsync(stateFD) == 0 else {
            throw .snapshotWrite("the files passed: \(String(cString: strerror(errno)))")
        }
        return (written, bytes.count)
    }

    /// Writes `memory` then `state`, each to a temporary name renamed into place, so a
    /// directory never holds a state file that does not match its memory file.
    func write(_ snap: VMSnapshot, to directory: String) throws(VMMError) -> (UInt64, Int) {
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw .snapshotWrite("\(directory): \(String(cString: strerror(errno)))")
        }
        func create(_ name: String) throws(VMMError) -> (Int32, String) {
            let tmp = directory + "/." + name + ".tmp"
            // O_EXCL: the seccomp filter lets this thread create files only, never open one
            // that exists (SyscallTable.swift).
            unlink(tmp)
            let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw .snapshotWrite("\(tmp): \(String(cString: strerror(errno)))") }
            return (fd, tmp)
        }
        func commit(_ fd: Int32, _ tmp: String, _ name: String) throws(VMMError) {
            let ok = fsync(fd) == 0
            close(fd)
            guard ok, rename(tmp, directory + "/" + name) == 0 else {
                unlink(tmp)
                throw .snapshotWrite("\(directory)/\(name): \(String(cString: strerror(errno)))")
            }
        }
        // A state file left from an earlier snapshot must not pair with the new memory.
        unlink(directory + "/" + SnapshotImage.stateFile)
        let (mfd, mtmp) = try create(SnapshotImage.memoryFile)
        let written: UInt64
        do { written = try memory.writeImage(to: mfd) } catch {
            close(mfd); unlink(mtmp)
            throw .snapshotWrite("\(directory)/\(SnapshotImage.memoryFile): \(error)")
        }
        try commit(mfd, mtmp, SnapshotImage.memoryFile)
        let bytes = snap.encoded()
        let (sfd, stmp) = try create(SnapshotImage.stateFile)
        guard (bytes.withUnsafeBytes { writeAll(sfd, $0) }) else {
            close(sfd); unlink(stmp)
            throw .snapshotWrite("\(directory)/\(SnapshotImage.stateFile): \(String(cString: strerror(errno)))")
        }
        try commit(sfd, stmp, SnapshotImage.stateFile)
        return (written, bytes.count)
    }

    // MARK: Restore

    /// Puts a snapshot's state on the freshly built machine (instead of `boot`). RAM is
    /// already the image. Order: the VM clock, the irqchip, each vCPU, the legacy
    /// devices, then each virtio device (which may raise its line into the irqchip).
    func apply(_ snap: VMSnapshot) throws(VMMError) {
        guard snap.flavour == flavour.snapshotFlavour else {
            throw .snapshot(.flavour(found: snap.flavour.rawValue, host: flavour.snapshotFlavour))
        }
        let slots = virtioDevices.map(\.slot)
        guard snap.virtio.map(\.slot) == slots else {
            throw .snapshot(.malformed(field: "VIRT", message: "devices in slots \(snap.virtio.map(\.slot)), the definition makes \(slots)"))
        }
        do throws(KVMError) {
            // The guest's kvmclock follows the host's across the gap, as across a pause.
            let now = wallClockNanoseconds()
            let gap = snap.clockRealtimeNs > 0 && now > snap.clockRealtimeNs ? now - snap.clockRealtimeNs : 0
            try vm.setClock(snap.clockNs &+ gap)
            try vm.setIRQChipState(snap.irqchips)
            for (ctx, state) in zip(vcpus, snap.vcpus) { try ctx.vcpu.restoreState(state) }
        } catch { throw .snapshot(.malformed(field: "VCPU/IRQC", message: "KVM refused the saved state: \(error)")) }
        _ = serial.restoreRegisters(snap.serial)
        sysctl.restoreEvents(snap.sysctlEvents)
        for (runner, saved) in zip(virtioDevices, snap.virtio) {
            guard saved.deviceType == runner.device.deviceTypeID else {
                throw .snapshot(.malformed(field: "VIRT slot \(saved.slot)", message: "device type \(saved.deviceType), the definition makes \(runner.device.deviceTypeID)"))
            }
            do { try runner.device.restoreState(saved.transport) } catch {
                throw .snapshot(.malformed(field: "VIRT slot \(saved.slot)", message: error.reason))
            }
        }
    }
}
