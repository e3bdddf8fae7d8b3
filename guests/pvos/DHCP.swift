// DHCP client (RFC 2131) for `ip=dhcp`: DISCOVER -> OFFER -> REQUEST -> ACK, every
// message broadcast (the broadcast flag asks the server to answer the same way), retried
// with Timers (1, 2, 4, 4, ... s); renews at half the lease (REQUEST for the same address)
// and gives the address up when the lease ends unrenewed. Runs from the idle poll: the
// shell is usable meanwhile; `net0: dhcp ...` is printed once bound.

enum DHCP {
    enum State { case idle, selecting, requesting, renewing, bound }
    static var state = State.idle
    static var transaction: UInt32 = 0
    static var offered: UInt32 = 0
    static var server: UInt32 = 0
    static var tries = 0
    static var retryTimer: UInt32 = 0
    static var leaseTimers: [UInt32] = []
    static var leaseSeconds: UInt32 = 0
    static var started: UInt64 = 0

    static func start() {
        guard let d = Net.device else { return }
        for t in leaseTimers { Timers.cancel(t) }
        leaseTimers.removeAll()
        transaction = UInt32(truncatingIfNeeded: rdtsc() ^ (d.mac << 8))
        started = Clock.nanoseconds()
        state = .selecting
        tries = 0
        send()
    }

    /// The message for the current state, then the retry timer.
    static func send() {
        Timers.cancel(retryTimer)
        let type = state == .selecting ? DHCPMessage.discover : DHCPMessage.request
        let requested = state == .renewing ? Net.address : offered
        let seconds = UInt16(min((Clock.nanoseconds() - started) / 1_000_000_000, 0xFFFF))
        guard let mac = Net.device?.mac else { return }
        let me = transaction
        try? Net.sendUDP(to: 0xFFFF_FFFF, port: DHCPMessage.serverPort, from: DHCPMessage.clientPort,
                         count: DHCPMessage.maxSize, mac: EthernetHeader.broadcast, source: 0) { p in
            _ = DHCPMessage.write(p, type: type, mac: mac, transaction: me, requested: requested, server: server,
                                  secondsElapsed: seconds)
        }
        tries += 1
        let delay: UInt64 = tries >= 3 ? 4000 : UInt64(1000 << (tries - 1))
        retryTimer = Timers.schedule(afterMs: delay) { retry() }
    }

    static func retry() {
        retryTimer = 0
        switch state {
        case .requesting where tries >= 4:
            state = .selecting      // the offer went stale: start over
            tries = 0
        case .idle, .bound:
            return
        default:
            break
        }
        send()
    }

    /// A UDP payload that arrived on port 68.
    static func input(_ p: UnsafeRawPointer, _ n: Int) {
        guard state != .idle, state != .bound, let d = Net.device,
              let m = DHCPMessage.parse(p, n, mac: d.mac, transaction: transaction) else { Net.drop(.dhcp); return }
        switch (state, m.type) {
        case (.selecting, DHCPMessage.offer):
            guard m.yourAddress != 0, !IPv4.isBroadcastOrMulticast(m.yourAddress), m.server != 0 else { Net.drop(.dhcp); return }
            offered = m.yourAddress
            server = m.server
            state = .requesting
            tries = 0
            send()
        case (.requesting, DHCPMessage.ack), (.renewing, DHCPMessage.ack):
            bind(m)
        case (.requesting, DHCPMessage.nak), (.renewing, DHCPMessage.nak):
            Net.set(address: 0, prefix: 0, gateway: 0)
            start()
        default:
            Net.drop(.dhcp)
        }
    }

    private static func bind(_ m: DHCPMessage) {
        let address = m.yourAddress
        guard address != 0, !IPv4.isBroadcastOrMulticast(address) else { Net.drop(.dhcp); return }
        let prefix = m.subnetMask.flatMap { IPv4.prefix(ofMask: $0) }.flatMap { $0 >= 1 && $0 <= 32 ? $0 : nil } ?? 24
        var gateway: UInt32 = 0
        if let r = m.router, r != address, r & IPv4.mask(prefix) == address & IPv4.mask(prefix) { gateway = r }
        let changed = address != Net.address || prefix != Net.prefix || gateway != Net.gateway
        if changed { Net.set(address: address, prefix: prefix, gateway: gateway) }
        Timers.cancel(retryTimer)
        retryTimer = 0
        state = .bound
        if m.server != 0 { server = m.server }
        // At most a day between renewals; at least 10 s (a tiny lease must not spin).
        leaseSeconds = min(max(m.leaseSeconds ?? 3600, 20), 172_800)
        for t in leaseTimers { Timers.cancel(t) }
        let ms = UInt64(leaseSeconds) * 1000
        leaseTimers = [Timers.schedule(afterMs: ms / 2) { renew() }, Timers.schedule(afterMs: ms) { expire() }]
        if changed { report() }
    }

    static func renew() {
        guard state == .bound else { return }
        state = .renewing
        tries = 0
        started = Clock.nanoseconds()
        send()
    }

    static func expire() {
        guard state == .renewing else { return }
        Console.freshLine()
        Console.write("net0: dhcp lease expired\n")
        Net.set(address: 0, prefix: 0, gateway: 0)
        start()
    }

    static func report() {
        Console.freshLine()
        Console.write("net0: dhcp ")
        NetShell.writeAddress(Net.address)
        Console.put(47)
        Console.writeDecimal(UInt64(Net.prefix))
        if Net.gateway != 0 { Console.write(" gateway "); NetShell.writeAddress(Net.gateway) }
        Console.write(" lease ")
        Console.writeDecimal(UInt64(leaseSeconds))
        Console.write(" s\n")
    }
}
