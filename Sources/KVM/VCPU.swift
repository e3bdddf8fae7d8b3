#if canImport(Glibc)
import Glibc
#endif
import CKVM
import SystemPackage

/// One I/O port access that exited to userspace. `data` points into the vCPU's `kvm_run`
/// page and holds `size * count` bytes (count > 1 for `rep ins/outs`).
public struct PortAccess {
    public let port: UInt16
    public let size: Int
    public let count: Int
    public let data: UnsafeMutableRawBufferPointer
}

/// One MMIO access that exited to userspace; `data` points into `kvm_run`.
public struct MMIOAccess {
    public let address: UInt64
    public let data: UnsafeMutableRawBufferPointer
}

/// Why KVM_RUN returned, decoded (the rust-vmm `VcpuExit` idea).
public enum VCPUExit {
    case ioIn(PortAccess)
    case ioOut(PortAccess)
    case mmioRead(MMIOAccess)
    case mmioWrite(MMIOAccess)
    case hlt
    /// Triple fault.
    case shutdown
    /// KVM_RUN returned EINTR or KVM_EXIT_INTR: a signal or immediate_exit kicked us out.
    case interrupted
    case systemEvent(type: UInt32)
    case internalError(suberror: UInt32, data: [UInt64])
    case failEntry(hardwareReason: UInt64)
    case exception(vector: UInt32, errorCode: UInt32)
    case unknown(reason: UInt32)
}

/// A vCPU fd plus its mmapped `kvm_run`. Owns both; `deinit` unmaps and closes.
public struct VCPU: ~Copyable {
    public let fd: Int32
    public let id: Int
    let runPage: UnsafeMutablePointer<kvm_run>
    let runSize: Int

    init(fd: Int32, id: Int, runSize: Int) throws(KVMError) {
        let p = mmap(nil, runSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else {
            let e = Errno(rawValue: Glibc.errno)
            close(fd)
            throw KVMError("mmap kvm_run of vCPU \(id)", e)
        }
        self.fd = fd
        self.id = id
        self.runPage = p.assumingMemoryBound(to: kvm_run.self)
        self.runSize = runSize
    }

    deinit {
        munmap(runPage, runSize)
        close(fd)
    }

    /// A handle another thread may use to kick this vCPU out of KVM_RUN.
    public var kicker: VCPUKicker { VCPUKicker(run: runPage) }

    /// Enters the guest until the next exit that needs userspace. Allocates nothing except
    /// for the rare fatal `internalError` decoding.
    public func run() throws(KVMError) -> VCPUExit {
        let r = ckvm_run(fd)
        if r == -EINTR || r == -EAGAIN { return .interrupted }
        if r < 0 { throw KVMError("KVM_RUN vCPU \(id)", Errno(rawValue: -r)) }
        let run = runPage
        switch Int32(ckvm_run_exit_reason(run)) {
        case KVM_EXIT_IO:
            let size = Int(ckvm_run_io_size(run)), count = Int(ckvm_run_io_count(run))
            let offset = Int(ckvm_run_io_data_offset(run))
            // The kernel wrote these fields, but bound them anyway: they index our mapping.
            guard size > 0, count > 0, offset >= 0, offset + size * count <= runSize else { return .unknown(reason: UInt32(KVM_EXIT_IO)) }
            let data = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(run) + offset, count: size * count)
            let access = PortAccess(port: ckvm_run_io_port(run), size: size, count: count, data: data)
            return ckvm_run_io_direction(run) == UInt8(KVM_EXIT_IO_OUT) ? .ioOut(access) : .ioIn(access)
        case KVM_EXIT_MMIO:
            let len = min(Int(ckvm_run_mmio_len(run)), 8)
            let access = MMIOAccess(address: ckvm_run_mmio_addr(run),
                                    data: UnsafeMutableRawBufferPointer(start: ckvm_run_mmio_data(run), count: len))
            return ckvm_run_mmio_is_write(run) != 0 ? .mmioWrite(access) : .mmioRead(access)
        case KVM_EXIT_HLT: return .hlt
        case KVM_EXIT_SHUTDOWN: return .shutdown
        case KVM_EXIT_INTR: return .interrupted
        case KVM_EXIT_SYSTEM_EVENT: return .systemEvent(type: ckvm_run_system_event_type(run))
        case KVM_EXIT_INTERNAL_ERROR:
            let n = min(ckvm_run_internal_ndata(run), 16)
            return .internalError(suberror: ckvm_run_internal_suberror(run), data: (0..<n).map { ckvm_run_internal_data(run, $0) })
        case KVM_EXIT_FAIL_ENTRY: return .failEntry(hardwareReason: ckvm_run_fail_entry_reason(run))
        case KVM_EXIT_EXCEPTION: return .exception(vector: ckvm_run_ex_exception(run), errorCode: ckvm_run_ex_error_code(run))
        case let reason: return .unknown(reason: UInt32(reason))
        }
    }

    /// Turns on KVM_CAP_SYNC_REGS: registers arrive in `kvm_run` with every exit, so the
    /// loop (and a crash report) reads them without a 3-6 us ioctl.
    public func enableSyncRegisters() { ckvm_run_set_valid_regs(runPage, ckvm_sync_mask_all()) }

    /// Registers as of the last exit, when sync regs are on.
    public var syncedRegisters: (kvm_regs, kvm_sregs)? {
        ckvm_run_valid_regs(runPage) & ckvm_sync_mask_all() == ckvm_sync_mask_all()
            ? (ckvm_run_sync_regs(runPage), ckvm_run_sync_sregs(runPage)) : nil
    }

    /// KVM_KVMCLOCK_CTRL: tells the guest's kvmclock that the VM was paused, so its
    /// watchdogs don't take the stopped time for a lockup. Fails harmlessly (EINVAL) when
    /// the guest has no kvmclock.
    @discardableResult
    public func notifyClockPaused() -> Bool { ckvm_kvmclock_ctrl(fd) == 0 }

    /// KVM_GET_MP_STATE (0 runnable, 1 uninitialized, 2 init received, 3 halted, ...).
    public func mpState() throws(KVMError) -> UInt32 {
        var st: UInt32 = 0
        _ = try check(ckvm_get_mp_state(fd, &st), "KVM_GET_MP_STATE")
        return st
    }

    /// Clears a previous kick so the next KVM_RUN enters the guest.
    public func clearImmediateExit() { ckvm_run_set_immediate_exit(runPage, 0) }

    // MARK: Registers

    public func registers() throws(KVMError) -> kvm_regs {
        var r = kvm_regs()
        _ = try check(ckvm_get_regs(fd, &r), "KVM_GET_REGS")
        return r
    }

    public func setRegisters(_ r: kvm_regs) throws(KVMError) {
        var r = r
        _ = try check(ckvm_set_regs(fd, &r), "KVM_SET_REGS")
    }

    public func specialRegisters() throws(KVMError) -> kvm_sregs {
        var s = kvm_sregs()
        _ = try check(ckvm_get_sregs(fd, &s), "KVM_GET_SREGS")
        return s
    }

    public func setSpecialRegisters(_ s: kvm_sregs) throws(KVMError) {
        var s = s
        _ = try check(ckvm_set_sregs(fd, &s), "KVM_SET_SREGS")
    }

    /// KVM_SET_MSRS for one MSR. Returns false when KVM refused the MSR (not an error:
    /// that is how the host-flavour probe tells PVM from hardware KVM).
    public func setMSR(_ index: UInt32, _ value: UInt64) throws(KVMError) -> Bool {
        try check(ckvm_set_msr(fd, index, value), "KVM_SET_MSRS \(index)") == 1
    }

    /// KVM_GET_MSRS for one MSR; nil when KVM does not know it.
    public func msr(_ index: UInt32) throws(KVMError) -> UInt64? {
        var v: UInt64 = 0
        return try check(ckvm_get_msr(fd, index, &v), "KVM_GET_MSRS \(index)") == 1 ? v : nil
    }

    /// The values of `indices` in as few KVM_GET_MSRS as KVM allows (one when it knows
    /// them all; a vCPU ioctl costs 3-6 us here): in order, nil where KVM does not know one.
    public func msrs(_ indices: [UInt32]) throws(KVMError) -> [UInt64?] {
        var read = [UInt64](repeating: 0, count: indices.count)
        let handled = try msrBatches(indices.count, "KVM_GET_MSRS") { from, n in
            indices.withUnsafeBufferPointer { i in
                read.withUnsafeMutableBufferPointer { v in ckvm_get_msrs(fd, i.baseAddress! + from, v.baseAddress! + from, UInt32(n)) }
            }
        }
        return indices.indices.map { handled[$0] ? read[$0] : nil }
    }

    /// Sets `entries` in as few KVM_SET_MSRS as KVM allows; an MSR KVM refuses is skipped
    /// (PVM's read-only ones). Returns, in order, whether each was set.
    @discardableResult
    public func setMSRs(_ entries: [(index: UInt32, value: UInt64)]) throws(KVMError) -> [Bool] {
        let indices = entries.map(\.index), data = entries.map(\.value)
        return try msrBatches(entries.count, "KVM_SET_MSRS") { from, n in
            indices.withUnsafeBufferPointer { i in
                data.withUnsafeBufferPointer { v in ckvm_set_msrs(fd, i.baseAddress! + from, v.baseAddress! + from, UInt32(n)) }
            }
        }
    }

    /// Runs `ioctl(from, n)` over [0, count) in batches of at most CKVM_MAX_MSRS. KVM
    /// handles the MSRs of a batch in order and stops at the first it does not know or
    /// refuses: that one is skipped and the next batch starts after it. Returns, for each
    /// index, whether KVM handled it.
    private func msrBatches(_ count: Int, _ name: String, _ ioctl: (_ from: Int, _ n: Int) -> Int32) throws(KVMError) -> [Bool] {
        var handled = [Bool](repeating: false, count: count)
        var from = 0
        while from < count {
            let n = min(count - from, Int(CKVM_MAX_MSRS))
            let r = Int(try check(ioctl(from, n), name))
            for k in from..<from + r { handled[k] = true }
            from += r < n ? r + 1 : n
        }
        return handled
    }

    public func setCPUID(_ table: CPUIDTable) throws(KVMError) {
        _ = try check(ckvm_set_cpuid2(fd, table.pointer), "KVM_SET_CPUID2")
    }

    public func tscKHz() -> Int? {
        let r = ckvm_get_tsc_khz(fd)
        return r > 0 ? Int(r) : nil
    }
}

/// Kicks a vCPU out of KVM_RUN from another thread: sets `immediate_exit` (so a vCPU about
/// to enter returns at once) and signals the thread (so a running one exits with EINTR).
///
/// `@unchecked Sendable`: it holds the address of the vCPU's `kvm_run` page and only does
/// an atomic byte store there; the page outlives every kick because the VM joins its vCPU
/// threads before dropping the VCPU.
public struct VCPUKicker: @unchecked Sendable {
    let run: UnsafeMutablePointer<kvm_run>

    public func kick(thread: pthread_t) {
        ckvm_run_set_immediate_exit(run, 1)
        pthread_kill(thread, ckvm_kick_signal())
    }

    /// Installs the no-op handler for the kick signal (without SA_RESTART, so KVM_RUN
    /// returns EINTR). Call once per process before starting vCPU threads.
    public static func installSignalHandler() {
        var sa = sigaction()
        sa.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&sa.sa_mask)
        sa.sa_flags = 0
        sigaction(ckvm_kick_signal(), &sa, nil)
    }
}
