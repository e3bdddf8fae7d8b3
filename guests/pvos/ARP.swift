// ARP (RFC 826) for net0: answers requests for our address, a cache of at most 16
// neighbours that expire after 60 s, and resolution with up to 3 requests 1 s apart
// (Timers). Frames for a neighbour being resolved wait in its entry (at most 8; the
// oldest is dropped); they go out when the reply comes, or are dropped and counted
// (`arp-unresolved`) when it never does.

enum ARP {
    struct Queued {
        var buffer: Int
        var length: Int
        var csum: (start: Int, offset: Int)?
    }
    struct Entry {
        var ip: UInt32
        var mac: UInt64 = 0
        var resolved = false
        var expires: UInt64 = 0      // ns
        var tries = 0
        var timer: UInt32 = 0
        var queue: [Queued] = []
    }
    static var entries: [Entry] = []
    static let maxEntries = 16, maxQueued = 8, maxTries = 3
    static let lifetimeMs: UInt64 = 60_000, retryMs: UInt64 = 1000
    static var requestsSent: UInt64 = 0, repliesSent: UInt64 = 0

    static func index(_ ip: UInt32) -> Int? { entries.firstIndex { $0.ip == ip } }

    /// A resolved, unexpired neighbour's MAC.
    static func lookup(_ ip: UInt32) -> UInt64? {
        guard let i = index(ip), entries[i].resolved, entries[i].expires > Clock.nanoseconds() else { return nil }
        return entries[i].mac
    }

    /// Frames still waiting for a resolution (any neighbour).
    static var waiting: Int { entries.reduce(0) { $0 + $1.queue.count } }

    /// Sends frame `b` (Ethernet header written, destination unknown) to `ip`'s MAC,
    /// resolving it first if needed. Takes ownership of `b`.
    static func send(_ b: Int, _ length: Int, csum: (start: Int, offset: Int)?, via ip: UInt32) {
        if let mac = lookup(ip) {
            try? Net.transmit(b, length, csum: csum, to: mac)
            return
        }
        let i: Int
        if let found = index(ip) {
            i = found
        } else {
            if entries.count >= maxEntries { evict() }
            entries.append(Entry(ip: ip))
            i = entries.count - 1
        }
        if entries[i].queue.count >= maxQueued {
            PacketPool.release(entries[i].queue.removeFirst().buffer)
            Net.drop(.arpFailed)
        }
        entries[i].queue.append(Queued(buffer: b, length: length, csum: csum))
        if entries[i].timer == 0 {          // not already asking
            entries[i].resolved = false
            entries[i].tries = 0
            request(i)
        }
    }

    /// Drops the entry that matters least: an expired or the oldest resolved one, else the first.
    private static func evict() {
        let now = Clock.nanoseconds()
        var victim = 0
        for (k, e) in entries.enumerated() where e.queue.isEmpty && (e.expires <= now || e.expires < entries[victim].expires) { victim = k }
        remove(victim)
    }

    private static func remove(_ i: Int) {
        for q in entries[i].queue { PacketPool.release(q.buffer); Net.drop(.arpFailed) }
        Timers.cancel(entries[i].timer)
        entries.remove(at: i)
    }

    /// All entries go (the address changed).
    static func flush() {
        while !entries.isEmpty { remove(entries.count - 1) }
    }

    private static func request(_ i: Int) {
        entries[i].tries += 1
        let ip = entries[i].ip
        entries[i].timer = Timers.schedule(afterMs: retryMs) { retry(ip) }
        emit(ARPPacket.request, targetMAC: 0, targetIP: ip, to: EthernetHeader.broadcast)
        requestsSent += 1
    }

    private static func retry(_ ip: UInt32) {
        guard let i = index(ip), !entries[i].resolved else { return }
        entries[i].timer = 0
        if entries[i].tries >= maxTries { remove(i); return }
        request(i)
    }

    private static func emit(_ operation: UInt16, targetMAC: UInt64, targetIP: UInt32, to mac: UInt64) {
        guard let d = Net.device, let b = PacketPool.take() else { Net.drop(.noBuffer); return }
        let f = Net.frame(b)
        ARPPacket(operation: operation, senderMAC: d.mac, senderIP: Net.address, targetMAC: targetMAC, targetIP: targetIP)
            .write(f.advanced(by: EthernetHeader.size))
        let length = EthernetHeader.size + ARPPacket.size
        try? Net.transmit(b, length, csum: nil, to: mac, type: EtherType.arp)
    }

    /// RFC 826's merge: update a known sender; learn one that asks for us; answer requests
    /// for our address. Frames waiting for the sender go out now.
    static func input(_ p: UnsafeRawPointer, _ n: Int) {
        guard let a = ARPPacket.parse(p, n) else { Net.drop(.arp); return }
        guard Net.address != 0 else { return }       // no address yet (DHCP): nothing to say
        let now = Clock.nanoseconds()
        var known = false
        if a.senderIP != 0, let i = index(a.senderIP) {
            learn(i, a.senderMAC, now)
            known = true
        }
        guard a.targetIP == Net.address else { return }
        if !known && a.senderIP != 0 && a.senderIP != Net.address {
            if entries.count >= maxEntries { evict() }
            entries.append(Entry(ip: a.senderIP))
            learn(entries.count - 1, a.senderMAC, now)
        }
        if a.operation == ARPPacket.request {
            emit(ARPPacket.reply, targetMAC: a.senderMAC, targetIP: a.senderIP, to: a.senderMAC)
            repliesSent += 1
        }
    }

    private static func learn(_ i: Int, _ mac: UInt64, _ now: UInt64) {
        entries[i].mac = mac
        entries[i].resolved = true
        entries[i].expires = now + lifetimeMs * 1_000_000
        Timers.cancel(entries[i].timer)
        entries[i].timer = 0
        let queue = entries[i].queue
        entries[i].queue.removeAll()
        for q in queue { try? Net.transmit(q.buffer, q.length, csum: q.csum, to: mac) }
    }
}
