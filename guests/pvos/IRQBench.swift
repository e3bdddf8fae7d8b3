// `bench irq [N]`: interrupt delivery latency through pvmm's probe device (--irq-probe):
// the guest triggers it through an ioeventfd, pvmm's thread stamps its TSC into our
// mailbox and writes an irqfd; irq_entry stamps the TSC on arrival. On PVM both read
// the same counter, so arrival - mailbox is irqfd write -> guest handler.

@_extern(c, "pvos_irq_probe_state") func irqProbeState(_ which: UInt64) -> UInt64
@_extern(c, "pvos_irq_probe_arm") func irqProbeArm(_ vector: UInt64)

enum IRQBench {
    static func run(_ args: ArraySlice<[UInt8]>) {
        guard let spec = Kernel.options.first(where: { $0.key == Array("pvmm_irq_probe".utf8) })?.value,
              let colon = spec.firstIndex(of: 58),
              let base = Virtio.parseNumber(spec[..<colon]), let gsi = Virtio.parseNumber(spec[(colon + 1)...]),
              base < BootLayout.minIdentityMap, gsi < 24 else {
            Console.write("bench irq: no probe (run pvmm with --irq-probe)\n")
            return
        }
        guard APIC.on, IOAPIC.routeDevice(UInt8(gsi), to: APIC.bspID) else {
            Console.write("bench irq: no interrupt controller\n")
            return
        }
        let n = args.first.flatMap { Virtio.parseNumber($0[...]) }.map { Int(min(max($0, 1), 100_000)) } ?? 2000
        irqProbeArm(UInt64(0x30) + gsi)
        let mailbox = irqProbeState(4)
        write32(base + 8, UInt32(truncatingIfNeeded: mailbox))
        write32(base + 12, UInt32(truncatingIfNeeded: mailbox >> 32))
        let cpu = SMP.current()
        Platform.enableInterrupts(cpu)
        var delivery: [UInt64] = [], roundTrip: [UInt64] = []
        delivery.reserveCapacity(n)
        roundTrip.reserveCapacity(n)
        var lost = 0
        for _ in 0..<n {
            let before = irqProbeState(1)
            let t0 = rdtsc()
            write32(base, 1)
            let deadline = t0 + Platform.tscKHz * 100   // 100 ms
            while irqProbeState(1) == before && rdtsc() < deadline {}
            guard irqProbeState(1) != before else { lost += 1; continue }
            let arrived = irqProbeState(0), sent = irqProbeState(3)
            if arrived > sent && sent > t0 { delivery.append(arrived - sent) }
            roundTrip.append(arrived &- t0)
        }
        irqProbeArm(0)
        Console.write("bench irq: irqfd -> handler median ")
        Console.writeDecimal(nanoseconds(median(&delivery)))
        Console.write(" ns; trigger -> handler median ")
        Console.writeDecimal(nanoseconds(median(&roundTrip)))
        Console.write(" ns; n=")
        Console.writeDecimal(UInt64(delivery.count))
        Console.write(" lost=")
        Console.writeDecimal(UInt64(lost))
        Console.put(10)
    }

    static func nanoseconds(_ cycles: UInt64) -> UInt64 { cycles * 1_000_000 / max(Platform.tscKHz, 1) }

    static func median(_ v: inout [UInt64]) -> UInt64 {
        guard !v.isEmpty else { return 0 }
        v.sort()
        return v[v.count / 2]
    }
}
