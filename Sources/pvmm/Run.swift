import ArgumentParser
import Devices
import Sandbox
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

    @Option(name: .long, help: ArgumentHelp("An initrd (initramfs) loaded high in guest RAM and passed to the kernel as PVH module 0 (Linux unpacks it as its root file system).", valueName: "path"))
    var initrd: String?

    @Option(name: .long, help: ArgumentHelp("Kernel command line passed to the guest in the PVH start info.", valueName: "string"))
    var cmdline: String = RunFlags.defaults.cmdline

    // `.unconditional`: `--memory -5` is a (bad) value, not a flag named -5, so the error
    // says it is out of range, as for `--memory=-5`.
    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp(
        "Guest RAM, from \(VMConfig.minMemoryMiB) MiB to the host's RAM: MiB, or with a suffix K, M, G or T (512M, 2G).",
        valueName: "size"))
    var memory: String = RunFlags.defaults.memory

    @Option(name: .long, parsing: .unconditional,
            help: ArgumentHelp("Number of vCPUs, from 1 to what KVM allows on this host; the guest starts them with INIT/SIPI.", valueName: "n"))
    var cpus: Int = RunFlags.defaults.cpus

    @Option(name: .long, help: ArgumentHelp(
        "A virtio-blk disk backed by a raw image file (repeatable; disk i is blk<i>). `readonly` opens it read-only; `id=NAME` sets the serial the guest reads (at most 20 characters). A writable image is locked against other VMs.",
        valueName: "path[,readonly][,id=name]"))
    var disk: [String] = []

    @Option(name: .long, help: ArgumentHelp(
        "A virtio-net device (repeatable; net i is net<i>, at most 4): `tap=NAME` attaches to the tap NAME (created when pvmm has CAP_NET_ADMIN), `fd=N` uses an open tap fd inherited from the caller, `passt` starts passt (user-mode networking, no root needed) and `passt=SOCKET` connects to a running one. `mac=MAC` sets the guest's address (default 52:54:00:12:34:56 + i).",
        valueName: "tap=name|fd=n|passt[=socket][,mac=mac]"))
    var net: [String] = []

    @Option(name: .long, help: ArgumentHelp(
        "The console device: `virtio` adds a virtio-console that takes over input once the guest's driver is up (the 8250 stays for early boot); `serial` keeps only the 8250.",
        valueName: "serial|virtio"))
    var console: String = RunFlags.defaults.console

    @Option(name: .long, help: ArgumentHelp(
        "A VM definition in JSON (docs/config.md: the same format as the daemon's API). Replaces the VM flags above; give one or the other.",
        valueName: "file"))
    var config: String?

    @Option(name: .customLong("poll-us"), help: ArgumentHelp(
        "Adaptive polling budget of the device threads in microseconds: after a batch a device watches its rings this long at most before it sleeps (0 = off; default \(VMConfig.defaultPollMicroseconds)).",
        valueName: "n"))
    var pollUs: Int?

    @Option(name: .long, help: ArgumentHelp(
        "Run a snapshot instead of booting (docs/snapshot.md): the VM is the snapshot's, its RAM mapped copy-on-write from DIR/memory, so any number of clones share it. Replaces the VM flags.",
        valueName: "dir"))
    var restore: String?

    @Flag(name: .customLong("force-disks"), help: "With --restore: run even if a disk changed since the snapshot (the guest's view of it may then be stale).")
    var forceDisks = false

    @Flag(name: .customLong("irq-probe"), help: "Benchmark aid: add the interrupt-latency probe device (pvos `bench irq`, Scripts/bench-cpu).")
    var irqProbe = false

    @Option(name: .long, help: ArgumentHelp(
        "System call filter of the VMM process (docs/security.md): `kill` stops the VMM with SIGSYS on a call outside its thread's allowlist and names it; `log` lets it through and the kernel logs it; `off` installs no filter.",
        valueName: "kill|log|off"))
    var seccomp: String = RunFlags.defaults.seccomp

    @Flag(name: .long, help: "Run the VMM jailed (docs/security.md): own pid/mount/ipc/uts/net namespaces, a root holding only the kernel, the disks and /dev/kvm, an unprivileged uid/gid once they are open, a cgroup with memory and pids limits.")
    var jail = false

    @Option(name: .long, help: ArgumentHelp("With --jail: the uid the VMM runs as (default 65534, nobody).", valueName: "n"))
    var uid: UInt32?

    @Option(name: .long, help: ArgumentHelp("With --jail: the gid the VMM runs as (default 65534, nogroup).", valueName: "n"))
    var gid: UInt32?

    /// The flags as plain values: what `run` and `pvmm create` work from, and what the
    /// fast path (RunFlags.swift) fills in without ArgumentParser.
    var flags: RunFlags {
        RunFlags(kernel: kernel, initrd: initrd, cmdline: cmdline, memory: memory, cpus: cpus, disk: disk, net: net, console: console,
                 config: config, pollUs: pollUs, restore: restore, forceDisks: forceDisks, irqProbe: irqProbe,
                 seccomp: seccomp, jail: jail, uid: uid, gid: gid)
    }

    func run() throws { try flags.run() }

    func definition() throws -> (VMConfig, errorsAs: String) { try flags.definition() }
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

    /// A pipe holding `bytes`, write end closed: the read end (returned, not
    /// close-on-exec) is how a VM definition reaches the process exec'd next.
    static func pipe(_ bytes: [UInt8]) throws(UsageError) -> Int32 {
        var fds: [Int32] = [0, 0]
        guard Glibc.pipe(&fds) == 0 else { throw UsageError(message: "pipe: \(String(cString: strerror(errno)))", status: 1) }
        // F_SETPIPE_SZ (1031): a definition may exceed the default 64 KiB pipe buffer.
        if bytes.count > 60 << 10 { _ = fcntl(fds[1], 1031, Int32(min(bytes.count + 4096, 1 << 20))) }
        guard bytes.withUnsafeBytes({ writeAll(fds[1], $0) }) else {
            throw UsageError(message: "pipe write: \(String(cString: strerror(errno)))", status: 1)
        }
        close(fds[1])
        return fds[0]
    }

    static func exec(_ path: String, _ arguments: [String]) throws(UsageError) -> Never {
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        execv(path, argv)
        throw UsageError(message: "cannot run \(path): \(String(cString: strerror(errno)))", status: 1)
    }
}
