import Foundation
import Testing

/// A network namespace made for one test, with a tap `tap0` at 10.77.0.1/24 inside it;
/// deinit deletes the namespace, which removes the tap too. Only addresses inside it are
/// used. Scripts/test installs iproute2, iputils-ping and socat.
final class NetNamespace {
    let name: String
    static let host = "10.77.0.1", guest = "10.77.0.2"

    /// With `bridgedTaps`, that many taps (tap0, tap1, ...) join a bridge br0 that has the
    /// host address instead of tap0.
    init(bridgedTaps: Int = 0) throws {
        name = "pvos-net-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        _ = try Self.run(["/usr/sbin/ip", "netns", "add", name])
        do {
            var cmds = [["ip", "link", "set", "lo", "up"]]
            if bridgedTaps == 0 {
                cmds += [["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"],
                         ["ip", "addr", "add", "\(Self.host)/24", "dev", "tap0"], ["ip", "link", "set", "tap0", "up"]]
            } else {
                cmds += [["ip", "link", "add", "br0", "type", "bridge"], ["ip", "addr", "add", "\(Self.host)/24", "dev", "br0"],
                         ["ip", "link", "set", "br0", "up"]]
                for i in 0..<bridgedTaps {
                    cmds += [["ip", "tuntap", "add", "dev", "tap\(i)", "mode", "tap"], ["ip", "link", "set", "tap\(i)", "master", "br0"],
                             ["ip", "link", "set", "tap\(i)", "up"]]
                }
            }
            for cmd in cmds { _ = try exec(cmd) }
        } catch {
            _ = try? Self.run(["/usr/sbin/ip", "netns", "del", name])
            throw error
        }
    }

    deinit { _ = try? Self.run(["/usr/sbin/ip", "netns", "del", name]) }

    /// Runs `argv` to completion (killed at `timeout`); throws unless it exits 0.
    @discardableResult
    static func run(_ argv: [String], timeout: Double = 10) throws -> Child {
        let c = try Child(argv)
        c.closeInput()
        let status = try c.wait(timeout: timeout)
        guard status == 0 else {
            throw HarnessError(description: "\(argv.joined(separator: " ")) exited \(status): \(c.text) \(c.errorText)")
        }
        return c
    }

    /// `argv` inside the namespace (PATH lookup by `ip netns exec`).
    @discardableResult
    func exec(_ argv: [String], timeout: Double = 10) throws -> Child {
        try Self.run(["/usr/sbin/ip", "netns", "exec", name] + argv, timeout: timeout)
    }

    /// One datagram from the host to the guest's UDP echo port (socat); what came back.
    func udpEcho(_ data: [UInt8], name: String) throws -> [UInt8] {
        let file = try Paths.temporaryFile(name, data)
        return try exec(["sh", "-c", "socat -T 5 -t 1 - UDP:\(Self.guest):7 < \(file)"], timeout: 20).stdout
    }

    /// QEMU microvm inside the namespace, serial on stdio, a virtio-net-device on tap0
    /// (or on `netdev`), at the shell prompt.
    func bootQEMU(cmdline: String = "ip=\(guest)/24,\(host)", deviceOptions: String = "",
                  netdev: String = "tap,id=n0,ifname=tap0,script=no,downscript=no",
                  mac: String = "52:54:00:77:00:02") throws -> Child {
        let vm = try QEMUTests.boot(["-global", "virtio-mmio.force-legacy=false",
                                     "-device", "virtio-net-device,netdev=n0,mac=\(mac)" + deviceOptions,
                                     "-netdev", netdev],
                                    cmdline: cmdline, wrapper: ["/usr/sbin/ip", "netns", "exec", name])
        try vm.expect("pvos> ", timeout: 30)
        return vm
    }
}

/// pvos's virtio-net driver and network stack against QEMU's virtio-net-device (an
/// independent implementation) on a tap, talking to the Linux host stack.
@Suite(.serialized) struct QEMUNetTests {
    @Test func hostPingsGuestWithoutLoss() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootQEMU()
        // Back to back enough that frames share a batch (a head-to-buffer mix-up there
        // once answered one request twice and lost the next).
        let ping = try ns.exec(["ping", "-c", "100", "-i", "0.01", "-W", "2", "-q", NetNamespace.guest], timeout: 40)
        let counts = pingCounts(ping.text)
        #expect(counts != nil && counts!.transmitted == 100 && counts!.received == 100, "\(ping.text)")
        let net = try vm.command("net", timeout: 30)
        #expect(net.contains("net0: mac 52:54:00:77:00:02 link up"), "\(net)")
        #expect(net.contains("net0: ip 10.77.0.2/24 gateway 10.77.0.1 (static)"), "\(net)")
        #expect(echoReplies(net) == counts?.transmitted, "\(net)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }

    /// With the offloads (the device completes checksums, marks frames NEEDS_CSUM/DATA_VALID)
    /// and without them or mergeable buffers (the guest computes and checks every checksum).
    /// And with 512-byte receive buffers, so that QEMU spreads each frame over several
    /// (MRG_RXBUF's num_buffers > 1).
    @Test(arguments: [("", ""), (",csum=off,guest_csum=off,mrg_rxbuf=off", ""), ("", " netrxbuf=512")])
    func udpEchoReturnsDatagramsUnchanged(deviceOptions: String, cmdline: String) throws {
        let ns = try NetNamespace()
        let vm = try ns.bootQEMU(cmdline: "ip=\(NetNamespace.guest)/24,\(NetNamespace.host)" + cmdline, deviceOptions: deviceOptions)
        var seed: UInt32 = 12345
        for size in [1, 1400, 1472] {   // 1472: a full 1500-byte IP datagram
            let data = (0..<size).map { _ -> UInt8 in seed = seed &* 1_103_515_245 &+ 12345; return UInt8(truncatingIfNeeded: seed >> 16) }
            let back = try ns.udpEcho(data, name: "udp-\(size).bin")
            #expect(back == data, "\(size) bytes sent, \(back.count) came back")
        }
        let net = try vm.command("net", timeout: 30)
        #expect(net.contains("udp in 3 echoed 3"), "\(net)")
        #expect(net.contains(" csum guest-csum mrg-rxbuf") == deviceOptions.isEmpty, "\(net)")
        // 1400 and 1472 bytes do not fit one 512-byte buffer (nor does 1 byte's reply: 60).
        #expect(net.contains("rx merged 2") == !cmdline.isEmpty, "\(net)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }

    @Test func guestPingsHostAndSendsUDP() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootQEMU()
        let out = try vm.command("ping \(NetNamespace.host) 3", timeout: 30)
        #expect(out.contains("seq=1 reply from 10.77.0.1 time="), "\(out)")
        #expect(out.contains("ping: 3 sent, 3 received, 0% loss"), "\(out)")
        // A host UDP listener receives `udp send` (a one-shot socat that prints it).
        let listener = try Child(["/usr/sbin/ip", "netns", "exec", ns.name, "socat", "-T", "10", "-u",
                                  "UDP-RECV:5555,bind=\(NetNamespace.host)", "-"])
        Thread.sleep(forTimeInterval: 0.3)   // let it bind
        #expect(try vm.command("udp send \(NetNamespace.host) 5555 hello from pvos", timeout: 30).contains("udp: sent 15 bytes"))
        _ = try? listener.expect("hello from pvos", timeout: 10)
        #expect(listener.text == "hello from pvos", "\(listener.text)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }

    /// A device MTU below 1500 (VIRTIO_NET_F_MTU) bounds what the guest sends: an echo
    /// that would exceed it is not sent.
    @Test func deviceMTUBoundsWhatIsSent() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootQEMU(deviceOptions: ",host_mtu=1400")
        #expect(try vm.command("net", timeout: 30).contains("link up mtu 1400"))
        for (size, echoed) in [(1372, true), (1373, false)] {
            let data = [UInt8](repeating: 0x41, count: size)
            let back = try ns.udpEcho(data, name: "mtu-\(size).bin")
            #expect((back == data) == echoed, "\(size) bytes: \(back.count) came back")
        }
        #expect(try vm.command("net", timeout: 30).contains("udp in 2 echoed 1"))
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }

    /// Unreachable neighbours and bad `ip=` values are reported, not hung on.
    @Test func unresolvedNeighboursAndBadAddressesAreReported() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootQEMU()
        let ping = try vm.command("ping 10.77.0.99 1", timeout: 30)
        #expect(ping.contains("seq=1 timeout") && ping.contains("ping: 1 sent, 0 received, 100% loss"), "\(ping)")
        #expect(try vm.command("udp send 10.77.0.99 9 x", timeout: 30).contains("udp: not sent (no ARP reply from the next hop)"))
        #expect(try vm.command("ping 10.77.0", timeout: 30).contains("usage: ping ADDR [COUNT]"))
        let net = try vm.command("net", timeout: 30)
        #expect(net.contains("arp-unresolved="), "\(net)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)

        let bad = try ns.bootQEMU(cmdline: "ip=10.77.0.2/33")
        #expect(bad.text.contains("net0: bad ip= (prefix); expected ip=ADDR/PREFIX[,GATEWAY] or ip=dhcp"), "\(bad.text)")
        #expect(try bad.command("net", timeout: 30).contains("net0: ip none"))
        #expect(try bad.command("ping 10.77.0.1", timeout: 30).contains("ping: no address"))
        bad.send("poweroff\n")
        #expect(try bad.wait(timeout: 30) == 0)
    }

    /// `net bench tx` frames reach the host's tap; `net bench rx` counts the host's pings.
    @Test func benchCommandsCountWhatCrossesTheTap() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootQEMU()
        func hostRx() throws -> Int {
            Int(try ns.exec(["cat", "/sys/class/net/tap0/statistics/rx_packets"]).text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        }
        _ = try vm.command("ping \(NetNamespace.host) 1", timeout: 30)   // ARP settled
        let before = try hostRx()
        let tx = try vm.command("net bench tx \(NetNamespace.host) 9999 1 64", timeout: 30)
        let sent = tx.range(of: "bench tx: ").flatMap { r in Int(tx[r.upperBound...].prefix { $0.isNumber }) } ?? 0
        // What the guest queued last may still be in the ring for a moment.
        var arrived = try hostRx() - before
        for _ in 0..<20 where arrived < sent {
            Thread.sleep(forTimeInterval: 0.1)
            arrived = try hostRx() - before
        }
        #expect(sent > 1000 && tx.contains("pkt/s") && tx.contains("Mbit/s"), "\(tx)")
        #expect(arrived >= sent && arrived < sent + 50, "guest sent \(sent), the tap got \(arrived)")
        let mark = vm.stdout.count
        vm.send("net bench rx 3\n")
        let ping = try ns.exec(["ping", "-c", "300", "-i", "0.002", "-q", NetNamespace.guest], timeout: 30)
        let rx = try vm.expect("udp datagrams", after: mark, timeout: 30)
        let counted = rx.range(of: "bench rx: ").flatMap { r in Int(rx[r.upperBound...].prefix { $0.isNumber }) } ?? 0
        #expect(ping.text.contains("300 received"), "\(ping.text)")
        #expect(counted >= 300 && counted < 400, "\(rx)")
        try vm.expect("pvos> ", after: mark, timeout: 10)
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }

    /// Two pvos guests on one Linux bridge: each one's ARP and ICMP against the other's.
    @Test func twoGuestsOnABridgePingEachOther() throws {
        let ns = try NetNamespace(bridgedTaps: 2)
        let a = try ns.bootQEMU(cmdline: "ip=10.77.0.2/24")
        let b = try ns.bootQEMU(cmdline: "ip=10.77.0.3/24", netdev: "tap,id=n0,ifname=tap1,script=no,downscript=no",
                                mac: "52:54:00:77:00:03")
        #expect(try a.command("ping 10.77.0.3 3", timeout: 30).contains("ping: 3 sent, 3 received, 0% loss"))
        #expect(try b.command("ping 10.77.0.2 2", timeout: 30).contains("ping: 2 sent, 2 received, 0% loss"))
        #expect(try b.command("ping \(NetNamespace.host) 1", timeout: 30).contains("1 received, 0% loss"))
        for vm in [a, b] {
            vm.send("poweroff\n")
            #expect(try vm.wait(timeout: 30) == 0)
        }
    }

    @Test func evilModesResetQEMUsDeviceAndTheDriverRecovers() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootQEMU()
        // QEMU rejects looped chains and impossible avail.idx with DEVICE_NEEDS_RESET; it
        // accepts a 64 KiB + 1 frame (the tap refuses it) and maps a buffer outside RAM
        // to a bounce buffer, so those two are only checked under pvmm.
        #expect(try vm.command("net evil loop", timeout: 30).contains("net evil: loop: status 0x4f needs-reset"))
        #expect(try vm.command("net evil jump", timeout: 30).contains("net evil: jump: status 0x4f needs-reset"))
        let ping = try vm.command("ping \(NetNamespace.host) 2", timeout: 30)
        #expect(ping.contains("2 received, 0% loss"), "\(ping)")
        let host = try ns.exec(["ping", "-c", "3", "-i", "0.1", "-W", "2", NetNamespace.guest], timeout: 30)
        #expect(host.text.contains("3 received, 0% packet loss"))
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }

    /// Hostile frames from the host (an AF_PACKET socket on the tap; Linux refuses to send
    /// frames shorter than the Ethernet header): bare headers, random
    /// ethertypes and bytes, IPv4 with bad checksums, lengths and fragments, UDP to port 7
    /// with bad checksums, malformed ARP and ICMP, jumbo frames (which QEMU spreads over
    /// several receive buffers). The guest drops them by reason and keeps
    /// answering.
    @Test func garbageFromTheHostIsDroppedAndCounted() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootQEMU()
        try ns.exec(["ip", "link", "set", "tap0", "mtu", "9000"])   // so that jumbo frames can be sent
        let blast = try ns.exec(["python3", "-c", Self.garbage, "3"], timeout: 30)
        let sent = Int(blast.text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        #expect(sent > 1000, "\(blast.text) \(blast.errorText)")
        let ping = try ns.exec(["ping", "-c", "10", "-i", "0.05", "-W", "2", NetNamespace.guest], timeout: 30)
        #expect(ping.text.contains("10 received, 0% packet loss"), "\(ping.text)")
        #expect(try ns.udpEcho(Array("still echoing".utf8), name: "udp-after-garbage.bin") == Array("still echoing".utf8))
        let net = try vm.command("net", timeout: 30)
        for reason in ["oversize=", "ethertype=", "ip-checksum=", "ip-header=", "ip-fragment=", "udp-checksum=", "arp=", "icmp="] {
            #expect(net.contains(reason), "no \(reason) drops: \(net)")
        }
        let drops = net.range(of: "net0: drops ").flatMap { r in Int(net[r.upperBound...].prefix { $0.isNumber }) } ?? 0
        // The tap and QEMU drop what the guest cannot take in time; of what reached the
        // guest, all but the pings, the UDP echo and the odd IPv6 frame were garbage.
        let received = net.range(of: "net0: rx ").flatMap { r in Int(net[r.upperBound...].prefix { $0.isNumber }) } ?? 0
        #expect(drops > 1000 && drops + 40 >= received, "\(drops) drops, \(received) frames received, \(sent) sent: \(net)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }

    /// Frames to the guest's MAC for SECONDS (argv[1]); prints how many were sent.
    static let garbage = """
    import os, random, socket, struct, sys, time
    def csum(b):
        if len(b) % 2: b += b'\\0'
        s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
        while s >> 16: s = (s & 0xffff) + (s >> 16)
        return ~s & 0xffff
    def ip(proto, payload, total=None, frag=0x4000, bad=False):
        h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, total or 20 + len(payload), 1, frag, 64, proto, 0,
                        bytes([10, 77, 0, 1]), bytes([10, 77, 0, 2]))
        c = csum(h) ^ (0x5555 if bad else 0)
        return h[:10] + struct.pack('!H', c) + h[12:] + payload
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(('tap0', 0))
    eth = bytes.fromhex('525400770002') + bytes.fromhex('020000000001')
    end = time.time() + float(sys.argv[1])
    n = 0
    while time.time() < end:
        k = n % 10
        if k == 0: f = eth + b'\\x08\\x00'                                          # IPv4 type, no header
        elif k == 1: f = eth + os.urandom(random.randint(2, 1500))                    # random ethertype and bytes
        elif k == 2: f = eth + b'\\x08\\x00' + ip(17, os.urandom(30), bad=True)     # IPv4 header checksum
        elif k == 3: f = eth + b'\\x08\\x00' + ip(17, os.urandom(30), total=1400)   # total length beyond the frame
        elif k == 4: f = eth + b'\\x08\\x00' + ip(17, os.urandom(30), frag=0x2000)  # a fragment
        elif k == 5: f = eth + b'\\x08\\x00' + ip(17, struct.pack('!HHHH', 4000, 7, 38, 1) + os.urandom(30))  # UDP checksum
        elif k == 6: f = eth + b'\\x08\\x06' + os.urandom(random.randint(0, 40))    # ARP garbage
        elif k == 7: f = eth + b'\\x08\\x00' + ip(1, b'\\x08\\x00\\x12\\x34' + os.urandom(20))  # ICMP checksum
        elif k == 8: f = eth + b'\\x08\\x00' + os.urandom(random.randint(0, 60))      # random IPv4 bytes
        else: f = eth + b'\\x08\\x00' + ip(17, os.urandom(random.randint(1600, 8000)))  # over the MTU: merged, then dropped
        try: s.send(f)
        except OSError: pass
        n += 1
    print(n)
    """

    @Test func dhcpFromQEMUsUserNetwork() throws {
        // QEMU's user-mode network (slirp) has its own DHCP server: 10.0.2.15, gateway 10.0.2.2.
        // Inside an empty namespace of its own, so nothing can leave the machine.
        let ns = try NetNamespace()
        let vm = try ns.bootQEMU(cmdline: "ip=dhcp", netdev: "user,id=n0")
        try vm.expect("net0: dhcp 10.0.2.15/24 gateway 10.0.2.2 lease", timeout: 30)   // printed after the prompt
        #expect(try vm.command("net", timeout: 30).contains("net0: ip 10.0.2.15/24 gateway 10.0.2.2 (dhcp)"))
        #expect(try vm.command("ping 10.0.2.2 1", timeout: 30).contains("1 received, 0% loss"))
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }
}
