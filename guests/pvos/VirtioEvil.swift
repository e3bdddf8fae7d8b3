// `virtio evil`: the guest breaks the ring rules on purpose (§2.7) and checks that the
// device answers with DEVICE_NEEDS_RESET instead of misbehaving, then resets and
// re-initialises it so it works again. On blk0 (request queue), else on the console's
// transmitq (output goes to the 8250 meanwhile).

enum VirtioEvil {
    static let names: [StaticString] = ["loop chain", "buffer outside RAM", "avail.idx jump"]

    static func run() {
        var statuses: [UInt32] = []
        var target: StaticString = "blk0"
        if let disk = BlockDevice.disks.first {
            for test in 0..<3 {
                guard disk.start(), let q = disk.queue else { break }
                post(test, q, disk.headerAddress(0), disk.statusAddress(0))
                statuses.append(settle(disk.device))
            }
            if !disk.start() { Console.write("virtio evil: blk0 did not come back\n") }
        } else if VirtioConsole.active, let d = VirtioConsole.device {
            target = "console"
            VirtioConsole.drain()
            VirtioConsole.active = false
            for test in 0..<3 {
                guard VirtioConsole.setup(), let q = VirtioConsole.tx else { break }
                post(test, q, VirtioConsole.txBuffers, VirtioConsole.txBuffers + 64)
                statuses.append(settle(d))
            }
            VirtioConsole.active = VirtioConsole.setup()
        } else {
            Console.write("virtio evil: no virtio device\n")
            return
        }
        for (i, s) in statuses.enumerated() {
            Console.write("virtio evil: ")
            Console.write(target)
            Console.write(" ")
            Console.write(names[i])
            Console.write(": status 0x")
            Console.writeHex(UInt64(s), digits: 2)
            Console.write(s & VirtioStatus.needsReset != 0 ? " needs-reset\n" : " no reset (device accepted it)\n")
        }
        Console.write("virtio evil: done\n")
    }

    static func descriptor(_ q: Virtqueue, _ i: UInt64, _ address: UInt64, _ length: UInt32, _ flags: UInt32, _ next: UInt32) {
        write64(q.desc + 16 * i, address)
        write32(q.desc + 16 * i + 8, length)
        write32(q.desc + 16 * i + 12, flags | next << 16)
    }

    /// On a freshly initialised queue (all descriptors free, indices 0).
    private static func post(_ test: Int, _ q: Virtqueue, _ a: UInt64, _ b: UInt64) {
        switch test {
        case 0:   // A -> B -> A ...
            descriptor(q, 0, a, 16, 1, 1)
            descriptor(q, 1, b, 1, 1, 0)
            write16(q.avail + 4, 0)
            write16(q.avail + 2, 1)
        case 1:   // far outside guest RAM
            descriptor(q, 0, 0x7F00_0000_0000, 16, 0, 0)
            write16(q.avail + 4, 0)
            write16(q.avail + 2, 1)
        default:  // more new entries than the ring holds
            write16(q.avail + 2, UInt16(q.size + 10))
        }
        memoryFence()
        write32(q.notify, q.index)
    }

    /// Waits up to 1 s for DEVICE_NEEDS_RESET (announced by a config interrupt, or
    /// polled); returns the Status register.
    static func settle(_ d: VirtioDevice) -> UInt32 {
        let t0 = rdtsc()
        var s = d.status
        while s & VirtioStatus.needsReset == 0 && rdtsc() &- t0 < Platform.tscKHz * 1000 {
            if d.interrupts {
                Platform.idle(SMP.bsp, until: t0 &+ Platform.tscKHz * 1000) { d.interruptPending }
                _ = d.takeInterrupts()
            } else {
                SMP.delay(1000)
            }
            s = d.status
        }
        return s
    }
}
