import ArgumentParser
import VMM
#if canImport(Glibc)
import Glibc
#endif

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot a VM with its serial console on this terminal.",
        discussion: """
        The console is the guest's 8250 serial port, and a virtio-console once the guest's \
        driver for it is up (`--console serial` leaves only the 8250). When stdin is a terminal it is put in \
        raw mode (restored on exit) and Ctrl-A x stops the VM (Ctrl-A h lists the escape keys, Ctrl-A Ctrl-A sends a Ctrl-A). \
        When stdin is a pipe or file, its bytes are fed to the guest; end of input is harmless.

        Exit status: the guest's power-off status; 0 after a guest reset or Ctrl-A x; \
        1 when the VM crashed (a report goes to stderr); 2 for bad input.
        """
    )

    @Option(name: .long, help: ArgumentHelp("Guest kernel: an ELF64 x86-64 file with a PVH or PVMM entry note. Default: the bundled pvos guest.", valueName: "path"))
    var kernel: String?

    @Option(name: .long, help: ArgumentHelp("Kernel command line passed to the guest in the PVH start info.", valueName: "string"))
    var cmdline: String = ""

    @Option(name: .long, help: ArgumentHelp("Guest RAM in MiB, from \(VMConfig.minMemoryMiB) to the host's RAM.", valueName: "MiB"))
    var memory: Int = 128

    @Option(name: .long, help: ArgumentHelp("Number of vCPUs, from 1 to what KVM allows on this host; the guest starts them with INIT/SIPI.", valueName: "n"))
    var cpus: Int = 1

    @Option(name: .long, help: ArgumentHelp(
        "A virtio-blk disk backed by a raw image file (repeatable; disk i is blk<i>). `readonly` opens it read-only; `id=NAME` sets the serial the guest reads (at most 20 characters). A writable image is locked against other VMs.",
        valueName: "path[,readonly][,id=name]"))
    var disk: [String] = []

    @Option(name: .long, help: ArgumentHelp(
        "The console device: `virtio` adds a virtio-console that takes over input once the guest's driver is up (the 8250 stays for early boot); `serial` keeps only the 8250.",
        valueName: "serial|virtio"))
    var console: String = ConsoleKind.virtio.rawValue

    @Flag(name: .customLong("irq-probe"), help: "Benchmark aid: add the interrupt-latency probe device (pvos `bench irq`, Scripts/bench-cpu).")
    var irqProbe = false

    func run() throws {
        let disks: [DiskConfig]
        let consoleKind: ConsoleKind
        do {
            disks = try disk.map { spec throws(VMMError) in try DiskConfig(argument: spec) }
            consoleKind = try ConsoleKind(argument: console)
        } catch {
            throw UsageError(message: error.description)
        }
        let config = VMConfig(kernel: try kernel ?? Executables.bundledGuest(), cmdline: cmdline, memoryMiB: memory, cpus: cpus,
                              disks: disks, console: consoleKind, irqProbe: irqProbe)
        // The VM runs in a lean process of its own (see Package.swift): replace this one.
        try Executables.exec(Executables.sibling("pvmm-vmm"), config.arguments)
    }
}

/// Files that ship next to the pvmm binary (Scripts/build puts them there).
enum Executables {
    static func selfDirectory() -> String? {
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = buf.withUnsafeMutableBytes { readlink("/proc/self/exe", $0.baseAddress!.assumingMemoryBound(to: CChar.self), 4095) }
        guard n > 0, let slash = buf[..<n].lastIndex(of: UInt8(ascii: "/")) else { return nil }
        return String(decoding: buf[..<slash], as: UTF8.self)
    }

    static func sibling(_ name: String) throws(UsageError) -> String {
        guard let dir = selfDirectory(), access(dir + "/" + name, X_OK) == 0 else {
            throw UsageError(message: "\(name) is missing next to pvmm (run Scripts/build)", status: 1)
        }
        return dir + "/" + name
    }

    /// The bundled guest: next to pvmm, or in the source tree above it.
    static func bundledGuest() throws(UsageError) -> String {
        let name = "pvos.elf"
        var dir = selfDirectory() ?? ""
        var candidates: [String] = []
        while !dir.isEmpty {
            candidates.append(dir + "/" + name)
            candidates.append(dir + "/guests/pvos/build/" + name)
            guard let slash = dir.lastIndex(of: "/") else { break }
            dir = String(dir[..<slash])
        }
        for c in candidates where access(c, R_OK) == 0 { return c }
        throw UsageError(message: "--kernel: not given, and the bundled guest \(name) was not found next to pvmm or in guests/pvos/build (run Scripts/build)")
    }

    static func exec(_ path: String, _ arguments: [String]) throws(UsageError) -> Never {
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        execv(path, argv)
        throw UsageError(message: "cannot run \(path): \(String(cString: strerror(errno)))", status: 1)
    }
}
