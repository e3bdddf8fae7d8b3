// Shell commands for net0: `net` (state and counters), `ping`, `udp send`,
// `net bench tx|rx`, `net evil`. Waits go through Idle.wait, so the stack keeps
// answering (ARP, echo) while a command waits.

enum NetShell {
    /// Returns false if `command` is not a network command.
    static func execute(_ command: [UInt8], _ args: ArraySlice<[UInt8]>) -> Bool {
        if matches(command, "ping") {
            ping(Array(args))
        } else if matches(command, "udp") {
            udp(Array(args))
        } else if matches(command, "net") {
            let a = Array(args)
            if a.isEmpty { status() }
            else if matches(a[0], "bench") { NetBench.run(Array(a.dropFirst())) }
            else if matches(a[0], "evil") { NetEvil.run(Array(a.dropFirst())) }
            else { Console.write("usage: net [bench tx ADDR PORT SECONDS SIZE | bench rx SECONDS | evil MODE]\n") }
        } else {
            return false
        }
        return true
    }

    static func writeAddress(_ a: UInt32) {
        for i in 0..<4 {
            if i > 0 { Console.put(46) }
            Console.writeDecimal(UInt64(a >> UInt32(24 - 8 * i) & 0xFF))
        }
    }

    static func writeMAC(_ m: UInt64) {
        for i in 0..<6 {
            if i > 0 { Console.put(58) }
            Console.writeHex(m >> UInt64(40 - 8 * i) & 0xFF, digits: 2)
        }
    }

    /// The device is there and has an address; else says why.
    static func ready(_ what: StaticString) -> NetDevice? {
        guard let d = Net.device else { Console.write(what); Console.write(": no network device\n"); return nil }
        guard Net.address != 0 else { Console.write(what); Console.write(": no address (ip= on the command line)\n"); return nil }
        return d
    }

    /// net0: mac, link, address, counters, drops by reason.
    static func status() {
        guard let d = Net.device else { Console.write("no network device\n"); return }
        Console.lock()
        Console.write("net0: mac ")
        writeMAC(d.mac)
        Console.write(d.linkUp ? " link up mtu " : " link down mtu ")
        Console.writeDecimal(UInt64(d.mtu))
        Console.write(" features")
        let names: [(UInt64, StaticString)] = [(NetFeature.csum, " csum"), (NetFeature.guestCsum, " guest-csum"),
            (NetFeature.mrgRxbuf, " mrg-rxbuf"), (VirtioFeature.eventIdx, " event-idx"), (NetFeature.status, " status"),
            (NetFeature.mac, " mac"), (NetFeature.mtu, " mtu")]
        for (bit, name) in names where d.device.features & bit != 0 { Console.write(name) }
        Console.write("\nnet0: ip ")
        if Net.address == 0 {
            Console.write(Net.mode == .dhcp ? "none (dhcp in progress)" : "none")
        } else {
            writeAddress(Net.address)
            Console.put(47)
            Console.writeDecimal(UInt64(Net.prefix))
            if Net.gateway != 0 { Console.write(" gateway "); writeAddress(Net.gateway) }
            Console.write(Net.mode == .dhcp ? " (dhcp)" : " (static)")
        }
        let c = d.counters
        Console.write("\nnet0: rx ")
        Console.writeDecimal(c.rxPackets)
        Console.write(" packets ")
        Console.writeDecimal(c.rxBytes)
        Console.write(" bytes, tx ")
        Console.writeDecimal(c.txPackets)
        Console.write(" packets ")
        Console.writeDecimal(c.txBytes)
        Console.write(" bytes, tx dropped ")
        Console.writeDecimal(c.txDropped)
        Console.write(", resets ")
        Console.writeDecimal(c.resets)
        Console.write(", rx merged ")
        Console.writeDecimal(c.rxMerged)
        Console.write(", rx segmented ")
        Console.writeDecimal(c.rxSegmented)
        Console.write("\nnet0: udp in ")
        Console.writeDecimal(Net.udpIn)
        Console.write(" echoed ")
        Console.writeDecimal(Net.udpEchoed)
        Console.write(", icmp in ")
        Console.writeDecimal(Net.icmpIn)
        Console.write(" echo replies ")
        Console.writeDecimal(Net.echoAnswered)
        Console.write(", arp requests ")
        Console.writeDecimal(ARP.requestsSent)
        Console.write(" replies ")
        Console.writeDecimal(ARP.repliesSent)
        Console.write("\nnet0: drops ")
        Console.writeDecimal(Net.dropTotal)
        for r in DropReason.allCases where Net.drops[r.rawValue] != 0 {
            Console.put(32)
            Console.write(r.name)
            Console.put(61)
            Console.writeDecimal(Net.drops[r.rawValue])
        }
        Console.put(10)
        Console.unlock()
    }

    // MARK: ping

    /// `ping ADDR [COUNT]`: one 56-byte echo request a second (the first at once); each
    /// reply is printed when it comes, however late, until 2 s after the last request
    /// (a timer); then the unanswered ones and a summary.
    static func ping(_ args: [[UInt8]]) {
        guard args.count == 1 || args.count == 2, let dst = IPv4.parseAddress(args[0]) else {
            Console.write("usage: ping ADDR [COUNT] (COUNT 1-1000, default 4)\n")
            return
        }
        var count = 4
        if args.count == 2 {
            guard let n = parseDecimal(args[1]), n >= 1, n <= 1000 else { Console.write("ping: COUNT must be 1-1000\n"); return }
            count = Int(n)
        }
        guard ready("ping") != nil else { return }
        Ping.start(dst, count)
        defer { Ping.active = false }
        let start = rdtsc()
        for seq in 1...count {
            if let err = Ping.send(seq) {
                Console.write("ping: ")
                Console.write(err)
                Console.put(10)
                return
            }
            if seq < count {
                Idle.sleep(until: start &+ UInt64(seq) * 1000 * Platform.tscKHz)
            }
        }
        var late = false
        let timer = Timers.schedule(afterMs: 2000) { late = true }
        _ = Idle.wait(timeoutMs: 2500) { late || Ping.replies == count }
        Timers.cancel(timer)
        for (i, t) in Ping.sentAt.enumerated() where t != 0 {
            Console.write("seq=")
            Console.writeDecimal(UInt64(i + 1))
            Console.write(" timeout\n")
        }
        Console.write("ping: ")
        Console.writeDecimal(UInt64(count))
        Console.write(" sent, ")
        Console.writeDecimal(UInt64(Ping.replies))
        Console.write(" received, ")
        Console.writeDecimal(UInt64((count - Ping.replies) * 100 / count))
        Console.write("% loss\n")
    }

    // MARK: udp

    /// `udp send ADDR PORT TEXT...`: one datagram (words joined by spaces) from port 40007;
    /// waits (≤ 3.5 s) until it left, i.e. its next hop was resolved.
    static func udp(_ args: [[UInt8]]) {
        guard args.count >= 4, matches(args[0], "send"), let dst = IPv4.parseAddress(args[1]),
              let port = parseDecimal(args[2]), port >= 1, port <= 0xFFFF else {
            Console.write("usage: udp send ADDR PORT TEXT\n")
            return
        }
        var text: [UInt8] = []
        for (i, w) in args[3...].enumerated() {
            if i > 0 { text.append(32) }
            text.append(contentsOf: w)
        }
        guard ready("udp") != nil else { return }
        do throws(NetError) {
            try Net.sendUDP(to: dst, port: UInt16(port), from: 40007, count: text.count) { p in
                text.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: text.count) }
            }
        } catch {
            Console.write("udp: ")
            Console.write(describe(error))
            Console.put(10)
            return
        }
        // Queued behind ARP until the next hop answers (then it left) or gives up.
        let hop = Net.nextHop(dst) ?? dst
        _ = Idle.wait(timeoutMs: 3500) { ARP.lookup(hop) != nil || ARP.index(hop) == nil }
        if ARP.lookup(hop) != nil {
            Console.write("udp: sent ")
            Console.writeDecimal(UInt64(text.count))
            Console.write(" bytes\n")
        } else {
            Console.write("udp: not sent (no ARP reply from the next hop)\n")
        }
    }

    static func describe(_ e: NetError) -> StaticString {
        switch e {
        case .noDevice: return "no network device"
        case .unconfigured: return "no address"
        case .noRoute: return "no route (off the subnet and no gateway)"
        case .noBuffer: return "out of packet buffers"
        case .tooLong: return "too long for one frame (the MTU less 28 bytes: 1472 at 1500)"
        case .device: return "device failure"
        }
    }
}

/// The echo requests `ping` has outstanding.
enum Ping {
    static var identifier: UInt16 = 0
    static var target: UInt32 = 0
    static var sentAt: [UInt64] = []   // TSC per sequence number - 1; 0 once answered
    static var replies = 0
    static var active = false
    static let payload = 56

    static func start(_ dst: UInt32, _ count: Int) {
        identifier = UInt16(truncatingIfNeeded: rdtsc() >> 4) | 1
        target = dst
        sentAt = [UInt64](repeating: 0, count: count)
        replies = 0
        active = true
    }

    /// Echo request number `seq` (1-based) to `target`; nil or why it could not go.
    static func send(_ seq: Int) -> StaticString? {
        if seq >= 1 && seq <= sentAt.count { sentAt[seq - 1] = rdtsc() }
        return echo(target, sequence: UInt16(truncatingIfNeeded: seq))
    }

    /// One echo request (also `net evil` and `net bench`'s ARP prod).
    static func echo(_ dst: UInt32, sequence: UInt16) -> StaticString? {
        guard let b = PacketPool.take() else { return "out of packet buffers" }
        let f = Net.frame(b).advanced(by: Net.ipPayload)
        for i in 0..<payload { Wire.set8(f, ICMPEcho.headerSize + i, UInt8(truncatingIfNeeded: i)) }
        ICMPEcho.write(f, type: ICMPEcho.request, identifier: identifier, sequence: sequence, payload: payload)
        do throws(NetError) {
            try Net.sendIPv4(b, to: dst, proto: IPProtocol.icmp, payload: ICMPEcho.headerSize + payload, csum: nil)
        } catch {
            return NetShell.describe(error)
        }
        return nil
    }

    /// An echo reply: printed and counted if it answers an outstanding request (once).
    static func received(_ echo: ICMPEcho, from source: UInt32) {
        let i = Int(echo.sequence) - 1
        guard active, echo.identifier == identifier, source == target, i >= 0, i < sentAt.count, sentAt[i] != 0 else { return }
        let rtt = rdtsc() &- sentAt[i]
        sentAt[i] = 0
        replies += 1
        Console.lock()
        Console.write("seq=")
        Console.writeDecimal(UInt64(i + 1))
        Console.write(" reply from ")
        NetShell.writeAddress(source)
        Console.write(" time=")
        Console.writeMilli(Shell.picoseconds(rtt) / 1_000_000)   // us, shown as ms
        Console.write(" ms\n")
        Console.unlock()
    }
}
