// `net evil MODE`: net0's driver breaks the ring rules on purpose (§2.7) and checks that
// the device answers with DEVICE_NEEDS_RESET, then resets and re-initialises it.
//   rx-outside [PEER]  every posted receive buffer moved to 0x7f0000000000, then a ping
//                      to PEER (default: the gateway) so that a frame comes back
//   loop               a transmit chain A -> B -> A
//   big                one transmit buffer of 12 + 65537 bytes (a 64 KiB + 1 frame)
//   jump               transmitq avail.idx moved size + 10 ahead
//   all                each in turn

enum NetEvil {
    static let modes: [StaticString] = ["rx-outside", "loop", "big", "jump"]
    static let outside: UInt64 = 0x7F00_0000_0000

    static func run(_ args: [[UInt8]]) {
        guard let d = Net.device else { Console.write("net evil: no network device\n"); return }
        guard args.count >= 1 && args.count <= 2 else { usage(); return }
        var selected: [Int] = []
        if matches(args[0], "all") { selected = [0, 1, 2, 3] }
        for (i, m) in modes.enumerated() where matches(args[0], m) { selected = [i] }
        guard !selected.isEmpty else { usage(); return }
        var peer = Net.gateway
        if args.count == 2 {
            guard let p = IPv4.parseAddress(args[1]) else { usage(); return }
            peer = p
        }
        if selected.contains(0) && (peer == 0 || Net.address == 0) {
            Console.write("net evil: rx-outside needs an address and a PEER (or a gateway) to answer\n")
            return
        }
        for mode in selected {
            d.device.reset()
            guard d.start(), let rx = d.rx, let tx = d.tx else { Console.write("net evil: net0 did not start\n"); return }
            var scratch: UInt64 = 0
            switch mode {
            case 0:
                for i in 0..<rx.size { write64(rx.desc + 16 * UInt64(i), outside) }
                memoryFence()
                _ = Ping.echo(peer, sequence: 0)
            case 1:
                VirtioEvil.descriptor(tx, 0, PacketPool.address(0), 16, 1, 1)
                VirtioEvil.descriptor(tx, 1, PacketPool.address(0), 16, 1, 0)
                publish(tx, head: 0)
            case 2:
                scratch = Pages.allocate(17)
                guard scratch != 0 else { Console.write("net evil: out of memory\n"); return }
                VirtioNetHeader.write(UnsafeMutableRawPointer(bitPattern: UInt(scratch))!, csum: nil)
                VirtioEvil.descriptor(tx, 0, scratch, UInt32(VirtioNetHeader.size + 65_537), 0, 0)
                publish(tx, head: 0)
            default:
                write16(tx.avail + 2, UInt16(tx.size + 10))
                memoryFence()
                write32(tx.notify, tx.index)
            }
            let s = VirtioEvil.settle(d.device)
            if scratch != 0 { Pages.release(scratch, 17) }
            Console.write("net evil: ")
            Console.write(modes[mode])
            Console.write(": status 0x")
            Console.writeHex(UInt64(s), digits: 2)
            Console.write(s & VirtioStatus.needsReset != 0 ? " needs-reset\n" : " no reset (device accepted it)\n")
        }
        d.device.reset()
        d.counters.resets += 1
        ARP.flush()   // resolutions the tests started were lost with the broken device
        Console.write(d.start() ? "net evil: net0 reset and re-initialised\n" : "net evil: net0 did not come back\n")
    }

    /// Puts descriptor `head` in the next avail slot, publishes and notifies.
    private static func publish(_ q: Virtqueue, head: UInt16) {
        write16(q.avail + 4 + 2 * UInt64(Int(q.availIdx) % q.size), head)
        write16(q.avail + 2, q.availIdx &+ 1)
        memoryFence()
        write32(q.notify, q.index)
    }

    private static func usage() {
        Console.write("usage: net evil rx-outside [PEER] | loop | big | jump | all\n")
    }
}
