import ArgumentParser
import Devices
import VMM
#if canImport(Glibc)
import Glibc
#endif

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot a VM with its serial console on this terminal.",
        discussion: """
        The console is the guest's 8250 serial port. When stdin is a terminal it is put in \
        raw mode (restored on exit) and Ctrl-A x stops the VM (Ctrl-A Ctrl-A sends a Ctrl-A). \
        When stdin is a pipe or file, its bytes are fed to the guest; end of input is harmless.

        Exit status: the guest's power-off status; 0 after a guest reset or Ctrl-A x; \
        1 when the VM crashed (a report goes to stderr); 2 for bad input.
        """
    )

    @Option(name: .long, help: ArgumentHelp("Guest kernel: an ELF64 x86-64 file with a PVH or PVMM entry note. Default: the bundled pvos guest.", valueName: "path"))
    var kernel: String?

    @Option(name: .long, help: ArgumentHelp("Kernel command line passed in the start info.", valueName: "string"))
    var cmdline: String = ""

    @Option(name: .long, help: ArgumentHelp("Guest RAM in MiB (at least \(VMConfig.minMemoryMiB); at most the host's RAM).", valueName: "MiB"))
    var memory: Int = 128

    @Option(name: .long, help: ArgumentHelp("Number of vCPUs (only 1 until SMP support lands).", valueName: "n"))
    var cpus: Int = 1

    func run() throws {
        let path = try kernel ?? BundledGuest.locate()
        let config = VMConfig(kernel: path, cmdline: cmdline, memoryMiB: memory, cpus: cpus)
        let vm: VM
        do { vm = try VM(config: config, console: FDSink(fd: STDOUT_FILENO)) }
        catch { throw UsageError(message: "\(error)", status: error.isUsageError ? 2 : 1) }

        let terminal = Terminal.attach(to: vm)
        do { try vm.start() } catch {
            terminal.restore()
            throw UsageError(message: "\(error)", status: 1)
        }
        let exit = vm.wait()
        terminal.restore()
        switch exit {
        case .crashed, .failed: printError("\(exit)\n")
        default: break
        }
        Glibc.exit(exit.exitStatus)
    }
}

/// Finds the bundled guest: next to the pvmm binary (where Scripts/build puts it), or in
/// the source tree above it (guests/pvos/build/pvos.elf).
enum BundledGuest {
    static let name = "pvos.elf"

    static func locate() throws(UsageError) -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        if n > 0 {
            var dir = String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            var candidates: [String] = []
            while let slash = dir.lastIndex(of: "/"), !dir.isEmpty {
                dir = String(dir[..<slash])
                candidates.append(dir + "/" + name)
                candidates.append(dir + "/guests/pvos/build/" + name)
            }
            for c in candidates where access(c, R_OK) == 0 { return c }
        }
        throw UsageError(message: "--kernel not given and the bundled guest \(name) was not found next to pvmm or in guests/pvos/build (run Scripts/build)")
    }
}
