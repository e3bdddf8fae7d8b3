import Foundation
import Testing

/// The same guest under QEMU's microvm (PVH entry, QEMU's own 8250): proof that pvos
/// follows the standard boot protocol and registers its VIF page itself, not just that it
/// works with pvmm. Scripts/test installs QEMU; its absence fails these tests.
@Suite(.serialized) struct QEMUTests {
    /// `wrapper` comes before QEMU's argv (e.g. `ip netns exec NAME`).
    static func boot(_ extra: [String] = [], cmdline: String? = nil, wrapper: [String] = []) throws -> Child {
        let qemu = "/usr/bin/qemu-system-x86_64"
        guard FileManager.default.isExecutableFile(atPath: qemu) else {
            throw HarnessError(description: "\(qemu) is missing: run Scripts/test, which installs qemu-system-x86")
        }
        return try Child(wrapper + [qemu, "-M", "microvm,x-option-roms=off,rtc=off,pit=off,pic=off",
                          "-enable-kvm", "-cpu", "host,-arch-capabilities", "-m", "128",
                          "-no-reboot", "-nodefaults", "-display", "none", "-monitor", "none",
                          "-serial", "stdio", "-kernel", Paths.guest]
                         + (cmdline.map { ["-append", $0] } ?? []) + extra)
    }

    @Test func pvhBootReachesNativeModeAndPowersOff() throws {
        let vm = try Self.boot(cmdline: "via=qemu")
        try vm.expect("pvos> ", timeout: 30)
        let info = try vm.command("info")
        #expect(info.contains("platform: pvm-native"))
        #expect(info.contains("cmdline: via=qemu"))
        #expect(info.contains("memory: 128 MiB"))
        #expect(try vm.command("echo under qemu").contains("under qemu"))
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0) // ACPI GED sleep ended QEMU
    }

    @Test func novifStaysEmulated() throws {
        let vm = try Self.boot(cmdline: "novif")
        try vm.expect("pvos> ", timeout: 30)
        #expect(try vm.command("info", timeout: 30).contains("platform: pvm-emulated"))
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }

    @Test func panicUnderQEMUReportsVector14() throws {
        // isa-debug-exit at pvmm's sysctl port: QEMU exits with (status << 1) | 1.
        let vm = try Self.boot(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        try vm.expect("pvos> ", timeout: 30)
        vm.send("panic\n")
        let status = try vm.wait(timeout: 30)
        #expect(vm.text.contains("vector=14"))
        #expect(status != 0 && status & 1 == 1)
    }
}
