// The serial shell.

enum Shell {
    static func run() -> Never {
        while true {
            Console.write("pvos> ")
            let args = words(Console.readLine())
            guard let command = args.first else { continue }
            execute(command, args.dropFirst())
        }
    }

    static func execute(_ command: [UInt8], _ args: ArraySlice<[UInt8]>) {
        if matches(command, "help") {
            Console.write("commands: help echo info cpus bench uptime sleep flood touch blk virtio net ping udp poweroff reboot panic\n")
        } else if matches(command, "echo") {
            var first = true
            for a in args {
                if !first { Console.put(32) }
                Console.write(a)
                first = false
            }
            Console.put(10)
        } else if matches(command, "info") {
            info()
        } else if matches(command, "uptime") {
            Console.write("uptime: ")
            Console.writeMilli(Clock.nanoseconds() / 1_000_000)
            Console.write(" s\n")
        } else if matches(command, "flood") {
            flood(args)
        } else if matches(command, "touch") {
            Pages.touchCommand(args)
        } else if matches(command, "cpus") {
            cpus()
        } else if matches(command, "bench") {
            if let what = args.first, matches(what, "cpu") { benchCPU() }
            else if let what = args.first, matches(what, "irq") { IRQBench.run(args.dropFirst()) }
            else { Console.write("usage: bench cpu | bench irq [N]\n") }
        } else if matches(command, "sleep") {
            Timer.sleepCommand(args)
        } else if matches(command, "blk") {
            blk(args)
        } else if matches(command, "virtio") {
            if let what = args.first, matches(what, "evil") { VirtioEvil.run() } else { Console.write("usage: virtio evil\n") }
        } else if NetShell.execute(command, args) {
            // net, ping, udp (NetShell.swift)
        } else if matches(command, "poweroff") {
            // Polled: transmit completions raise no interrupt, so an idle wait would
            // last until the drain's timeout (the kernel is tickless).
            VirtioConsole.drainPolled()
            Platform.powerOff(ExitStatus.ok)
        } else if matches(command, "reboot") {
            // The PC reset idiom: pvmm reboots in place with --on-reset restart (else exits 0).
            VirtioConsole.drainPolled()
            outb(LegacyPorts.i8042Command, LegacyPorts.i8042Reset)
        } else if matches(command, "panic") {
            // Not covered by the 4 GiB identity map (PML4 slot 224): #PF, vector 14.
            _ = read64(0x0000_7000_0000_0000)
        } else {
            Console.write("unknown command: ")
            Console.write(command)
            Console.put(10)
        }
    }

    /// `flood BYTES`: prints BYTES bytes of numbered 64-byte lines, then `flood done`:
    /// console throughput, and what the VMM does when nobody reads its console.
    static func flood(_ args: ArraySlice<[UInt8]>) {
        guard let w = args.first, let total = parseDecimal(w) else {
            Console.write("usage: flood BYTES\n")
            return
        }
        var line = [UInt8](repeating: 46, count: 64)   // "00000042 ........\n"
        line[63] = 10
        var sent: UInt64 = 0
        var n: UInt64 = 0
        while sent + 64 <= total {
            var v = n
            for i in (0..<8).reversed() { line[i] = 48 + UInt8(truncatingIfNeeded: v % 10); v /= 10 }
            Console.write(line)
            sent += 64
            n += 1
        }
        Console.write("flood done\n")
    }

    static func info() {
        Console.write("platform: ")
        Console.write(Platform.name)
        Console.write("\ncpus: ")
        Console.writeDecimal(UInt64(SMP.online))
        Console.write("\nmemory: ")
        Console.writeDecimal((Pages.totalRAM + (1 << 19)) >> 20)   // nearest MiB
        Console.write(" MiB\ntsc: ")
        Console.writeDecimal(Platform.tscKHz)
        Console.write(" kHz (")
        Console.write(Platform.tscSource)
        Console.write(")\nclock: ")
        Console.write(Clock.name)
        Console.write("\ninterrupts: ")
        if APIC.on {
            Console.write("x2apic timer tickless ")
            Console.write(Timer.modeName)
            if Console.interrupts { Console.write(", ioapic com1") }
            Console.write(IOAPIC.msiFromVMM ? ", devices msi" : ", devices ioapic")
        } else {
            Console.write("none (polled)")
        }
        Console.write(VirtioConsole.active ? "\nconsole: virtio\ndisks: " : "\nconsole: serial\ndisks: ")
        Console.writeDecimal(UInt64(BlockDevice.disks.count))
        if Kernel.initrdSize > 0 {
            Console.write("\ninitrd: ")
            Console.writeDecimal(Kernel.initrdSize)
            Console.write(" bytes at 0x")
            Console.writeHex(Kernel.initrdAddress, digits: 8)
            Console.write(", fnv1a 0x")
            Console.writeHex(Kernel.initrdChecksum())
        }
        // The user's words and options; the VMM's device entries on a line of their own.
        let all = words(Kernel.cmdline)
        Console.write("\ncmdline:")
        for w in all where !Kernel.isDeviceEntry(w) { Console.put(32); Console.write(w) }
        Console.put(10)
        if all.contains(where: Kernel.isDeviceEntry) {
            Console.write("devices:")
            for w in all where Kernel.isDeviceEntry(w) { Console.put(32); Console.write(w) }
            Console.put(10)
        }
        for o in Kernel.options where !Kernel.isDeviceKey(o.key) {
            Console.write("option: ")
            Console.write(o.key)
            Console.put(61)
            Console.write(o.value)
            Console.put(10)
        }
    }

    /// One line per CPU: `cpu N: apic A ticks T irqs I online` (ticks: timer interrupts).
    static func cpus() {
        for i in 0..<SMP.count {
            let c = SMP.cpu(i)
            Console.lock()
            Console.write("cpu ")
            Console.writeDecimal(UInt64(i))
            Console.write(": apic ")
            Console.writeDecimal(UInt64(c.apicID))
            Console.write(" ticks ")
            Console.writeDecimal(c.field(CPU.ticks))
            Console.write(" irqs ")
            Console.writeDecimal(c.field(CPU.irqs))
            Console.write(c.isOnline ? " online\n" : " starting\n")
            Console.unlock()
        }
    }

    static let benchIterations: UInt64 = 200_000_000

    /// The same dependent multiply-add loop on every online CPU at once.
    static func benchCPU() {
        let t0 = rdtsc()
        SMP.runEverywhere(SMP.commandBench, benchIterations)
        let wall = rdtsc() &- t0
        var n: UInt64 = 0
        var sum: UInt64 = 0
        for i in 0..<SMP.count where SMP.cpu(i).isOnline {
            let ps = picoseconds(SMP.cpu(i).field(CPU.result)) / benchIterations
            Console.write("cpu ")
            Console.writeDecimal(UInt64(i))
            Console.write(": ")
            Console.writeMilli(ps)
            Console.write(" ns/iter\n")
            n += 1
            sum += ps
        }
        Console.write("total: ")
        Console.writeDecimal(n)
        Console.write(" cpus, ")
        Console.writeMilli(sum / max(n, 1))
        Console.write(" ns/iter mean, ")
        Console.writeMilli(picoseconds(wall) / 1_000_000_000)
        Console.write(" s wall, ")
        Console.writeMilli(n * benchIterations * 1000 / max(picoseconds(wall) / 1000, 1))
        Console.write(" iter/ns aggregate\n")
    }

    static func picoseconds(_ cycles: UInt64) -> UInt64 {
        let k = Platform.tscKHz
        return cycles / k * 1_000_000_000 + cycles % k * 1_000_000_000 / k
    }
}
