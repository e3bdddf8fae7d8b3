// `net bench tx ADDR PORT SECONDS SIZE`: UDP datagrams of SIZE payload bytes to
// ADDR:PORT as fast as the transmitq takes them; `net bench rx SECONDS`: counts what
// arrives meanwhile. Rates are of UDP payload bytes (tx) or whole frames (rx).
// When the device does UDP segmentation offload (pvmm on a tap: HOST_USO), tx hands it
// up to 128 datagrams per frame (as Linux's UDP_SEGMENT), from one constant payload
// area; the report then also says how many frames carried them.

enum NetBench {
    static let sourcePort: UInt16 = 40009

    static func run(_ args: [[UInt8]]) {
        if args.count == 5, matches(args[0], "tx") { tx(args) }
        else if args.count == 2, matches(args[0], "rx") { rx(args[1]) }
        else { Console.write("usage: net bench tx ADDR PORT SECONDS SIZE | net bench rx SECONDS\n") }
    }

    static func tx(_ args: [[UInt8]]) {
        guard let dst = IPv4.parseAddress(args[1]) else { Console.write("net bench: bad ADDR\n"); return }
        guard let port = parseDecimal(args[2]), port >= 1, port <= 0xFFFF else { Console.write("net bench: PORT must be 1-65535\n"); return }
        guard let seconds = parseDecimal(args[3]), seconds >= 1, seconds <= 600 else { Console.write("net bench: SECONDS must be 1-600\n"); return }
        let maxSize = UInt64(EthernetHeader.maxFrame - Net.udpPayload)
        guard let size = parseDecimal(args[4]), size >= 1, size <= maxSize else { Console.write("net bench: SIZE must be 1-1472\n"); return }
        guard let d = NetShell.ready("net bench") else { return }
        guard let mac = resolve(dst) else { Console.write("net bench: no ARP reply from the next hop\n"); return }
        let count = Int(size)
        // Datagrams per frame with segmentation offload: at most 128 (Linux's
        // UDP_MAX_SEGMENTS) and a 64 KiB frame.
        let segments = d.segmentsUDP ? min(128, (65536 - Net.udpPayload) / count) : 1
        if segments > 1 && payloadArea == 0 {
            payloadArea = Pages.allocate(16)
            if payloadArea != 0 { UnsafeMutableRawPointer(bitPattern: UInt(payloadArea))!.initializeMemory(as: UInt8.self, repeating: 0x5A, count: 65536) }
        }
        let segmented = segments > 1 && payloadArea != 0
        let t0 = rdtsc()
        let end = t0 &+ seconds * 1000 * Platform.tscKHz
        var sent: UInt64 = 0
        var frames: UInt64 = 0
        var failed: UInt64 = 0
        while true {
            if frames & 63 == 0 {
                if rdtsc() >= end { break }
                Net.poll()       // keep answering ARP and pings meanwhile
            }
            do throws(NetError) {
                if segmented {
                    try Net.sendUDPSegmented(to: dst, port: UInt16(port), from: sourcePort, segment: count, segments: segments,
                                             payload: payloadArea, mac: mac)
                    sent += UInt64(segments)
                } else {
                    try Net.sendUDP(to: dst, port: UInt16(port), from: sourcePort, count: count, mac: mac) { p in
                        p.initializeMemory(as: UInt8.self, repeating: 0x5A, count: count)
                    }
                    sent += 1
                }
                frames += 1
            } catch {
                failed += 1
                if failed > 1000 || !d.up { break }
            }
        }
        report("bench tx: ", sent, sent * size, rdtsc() &- t0)
        if segmented {
            Console.write("bench tx: ")
            Console.writeDecimal(frames)
            Console.write(" frames of up to ")
            Console.writeDecimal(UInt64(segments))
            Console.write(" datagrams (UDP segmentation offload)\n")
        }
        if failed > 0 { Console.write("bench tx: "); Console.writeDecimal(failed); Console.write(" send failures\n") }
    }

    /// 64 KiB of the bench's payload byte, shared by every segmented frame.
    static var payloadArea: UInt64 = 0

    /// The next hop's MAC, resolved with one ARP exchange if needed (≤ 3.5 s).
    static func resolve(_ dst: UInt32) -> UInt64? {
        guard let hop = Net.nextHop(dst) else { return nil }
        if let m = ARP.lookup(hop) { return m }
        guard Ping.echo(hop, sequence: 0) == nil else { return nil }   // queued behind an ARP request
        _ = Idle.wait(timeoutMs: 3500) { ARP.lookup(hop) != nil }
        return ARP.lookup(hop)
    }

    static func rx(_ secondsText: [UInt8]) {
        guard let seconds = parseDecimal(secondsText), seconds >= 1, seconds <= 600 else { Console.write("net bench: SECONDS must be 1-600\n"); return }
        guard let d = Net.device else { Console.write("net bench: no network device\n"); return }
        let packets = d.counters.rxPackets, bytes = d.counters.rxBytes, udp = Net.udpIn
        let t0 = rdtsc()
        let end = t0 &+ seconds * 1000 * Platform.tscKHz
        Idle.sleep(until: end)
        report("bench rx: ", d.counters.rxPackets - packets, d.counters.rxBytes - bytes, rdtsc() &- t0)
        Console.write("bench rx: ")
        Console.writeDecimal(Net.udpIn - udp)
        Console.write(" udp datagrams\n")
    }

    /// `bench tx: N packets B bytes in T s: P pkt/s M Mbit/s`
    static func report(_ what: StaticString, _ packets: UInt64, _ bytes: UInt64, _ cycles: UInt64) {
        let ns = max(Shell.picoseconds(cycles) / 1000, 1)
        Console.write(what)
        Console.writeDecimal(packets)
        Console.write(" packets ")
        Console.writeDecimal(bytes)
        Console.write(" bytes in ")
        Console.writeMilli(ns / 1_000_000)
        Console.write(" s: ")
        Console.writeDecimal(packets * 1_000_000_000 / ns)
        Console.write(" pkt/s ")
        Console.writeMilli(bytes * 8_000_000 / ns)
        Console.write(" Mbit/s\n")
    }
}
