import Devices
import Foundation
import Synchronization
import Testing
import TestSupport
@testable import VMM

/// Collects console output.
final class Capture: ByteSink {
    let bytes = Mutex<[UInt8]>([])
    func write(_ b: UnsafeRawBufferPointer) { bytes.withLock { $0 += b } }
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
}

/// `VM`'s lifecycle on real KVM with tiny guests: start, pause, resume, stop, wait, and
/// how each way of ending maps to an exit status. Every wait is bounded by a watchdog that
/// stops the VM, and the test then fails on the `.stopped` it did not expect.
@Suite(.serialized) struct LifecycleTests {
    func vm(_ code: [UInt8], cpus: Int = 1) throws -> (VM, Capture) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vmm-\(getpid())-\(UUID().uuidString).elf").path
        FileManager.default.createFile(atPath: path, contents: Data(TinyELF.make(code: code)))
        defer { unlink(path) }
        let out = Capture()
        return (try VM(config: VMConfig(kernel: path, memoryMiB: 16, cpus: cpus, console: .serial), console: out), out)
    }

    /// wait(), or stop() after `seconds` (the test then sees `.stopped`).
    func wait(_ vm: VM, seconds: Double = 10) -> VMExit {
        let done = Atomic<Bool>(false)
        Thread.detachNewThread {
            let deadline = Date().addingTimeInterval(seconds)
            while !done.load(ordering: .relaxed) && Date() < deadline { usleep(10_000) }
            vm.stop()
        }
        defer { done.store(true, ordering: .relaxed) }
        return vm.wait()
    }

    @Test func guestPowerOffEndsTheVMWithItsStatus() throws {
        let (vm, out) = try vm(TinyELF.hello)
        try vm.start()
        let end = wait(vm)
        #expect(end == .poweredOff(status: 0) && end.exitStatus == 0)
        #expect(out.text == "ok\n")
        #expect(vm.stats.pio.value == 4 && vm.stats.totalExits == 4)   // three bytes and the sysctl port

        let (vm42, _) = try self.vm(TinyELF.sysctl(0x1_2A))
        try vm42.start()
        #expect(wait(vm42).exitStatus == 0x2A)                             // the low byte, as a process status
    }

    /// HLT stays in KVM (the in-kernel LAPIC): no exit reaches the VMM, yet pause, resume
    /// and stop reach the halted vCPUs.
    @Test func haltedGuestPausesResumesAndStopsWithoutExits() throws {
        let (vm, _) = try vm(TinyELF.haltForever, cpus: 2)
        try vm.start()
        try vm.start()                         // a second start does nothing
        usleep(50_000)
        try vm.pause()
        #expect(vm.isPaused)
        try vm.resume()
        #expect(!vm.isPaused)
        usleep(20_000)
        vm.stop()
        let end = wait(vm)
        #expect(end == .stopped && end.exitStatus == 0)
        #expect(vm.stats.totalExits == 0, "HLT exited to userspace: \(vm.stats.totalExits) exits")
    }

    @Test func aSpinningGuestStopsWhenAsked() throws {
        let (vm, _) = try vm(TinyELF.spin)
        try vm.start()
        usleep(20_000)
        vm.stop()
        vm.stop()                               // idempotent
        #expect(wait(vm, seconds: 5) == .stopped)
    }

    @Test func tripleFaultIsACrashWithRegisters() throws {
        let (vm, _) = try vm(TinyELF.ud2)
        try vm.start()
        let end = wait(vm)
        guard case .crashed(let report) = end else { Issue.record("\(end)"); return }
        #expect(end.exitStatus == 1)
        #expect(report.reason == "vCPU 0: triple fault (KVM_EXIT_SHUTDOWN)")
        #expect(report.rip == 0x10_0000 && report.registers.contains("RIP=0000000000100000"))
        #expect(end.description.hasPrefix("pvmm: VM crashed: vCPU 0: triple fault"))
    }

    @Test func badConfigIsAUsageError() {
        do {
            _ = try VM(config: VMConfig(kernel: "/nonexistent", memoryMiB: 16), console: Capture())
            Issue.record("built a VM without a kernel")
        } catch {
            #expect(error.isUsageError)
            #expect(error.description.contains("/nonexistent"))
        }
    }

    @Test func exitStatuses() {
        #expect(VMExit.poweredOff(status: 300).exitStatus == 44)
        #expect(VMExit.reset.exitStatus == 0 && VMExit.stopped.exitStatus == 0)
        #expect(VMExit.failed("KVM_RUN: EFAULT").exitStatus == 1)
        #expect(VMExit.poweredOff(status: 3).description == "guest powered off with status 3")
    }
}
