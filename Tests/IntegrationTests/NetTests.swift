import Foundation
import Testing

extension NetNamespace {
    /// `pvmm run` inside the namespace (its taps are only visible there), PVMM_STATS on.
    func bootPVMM(_ extra: [String], cmdline: String = "ip=\(NetNamespace.guest)/24,\(NetNamespace.host)",
                  user: String? = nil) throws -> Child {
        let drop = user.map { ["/usr/bin/setpriv", "--reuid", $0, "--regid", "nogroup", "--clear-groups"] } ?? []
        // PVMM_TEST_POLL_US applies here too (the second pass of the net suite).
        let run = Child.withPollFlag([Paths.pvmm, "run", "--kernel", Paths.guest, "--cmdline", cmdline] + extra)
        return try Child(["/usr/sbin/ip", "netns", "exec", name] + drop + run, environment: ["PVMM_STATS": "1"])
    }
}

/// ping's summary line: packets transmitted and received. The 100-ping tests give no
/// deadline (`-w`): with one, ping sends until it has `-c` replies and stops at the
/// `-c`-th, so a late reply on a loaded host leaves one more sent than received. Without
/// it ping sends exactly `-c` and waits `-W` after the last: lossless is `-c` of `-c`.
func pingCounts(_ text: String) -> (transmitted: Int, received: Int)? {
    guard let line = text.split(separator: "\n").first(where: { $0.contains(" packets transmitted, ") }) else { return nil }
    let words = line.split(separator: " ")
    guard words.count > 3, let t = Int(words[0]), let r = Int(words[3]) else { return nil }
    return (t, r)
}

/// The number after "echo replies " in pvos's `net` output.
func echoReplies(_ text: String) -> Int? {
    guard let r = text.range(of: "echo replies ") else { return nil }
    return Int(text[r.upperBound...].prefix(while: { $0.isNumber }))
}

/// One `NAME.KEY=VALUE` word of the PVMM_STATS line.
func statValue(_ stderr: String, _ key: String) -> UInt64? {
    for word in stderr.split(whereSeparator: { $0 == " " || $0 == "\n" }) where word.hasPrefix(key + "=") {
        return UInt64(word.dropFirst(key.count + 1))
    }
    return nil
}

/// pvmm's virtio-net device on real taps, bridges and passt, talking to the Linux host
/// stack in a namespace made per test (pvos's driver and stack on the guest side).
@Suite(.serialized) struct NetTests {
    static let tap = ["--net", "tap=tap0"]

    @Test func hostPings100TimesWithoutLoss() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootPVMM(Self.tap + ["--net", "tap=tap9,mac=52:54:00:aa:bb:cc"])
        try vm.expect("pvos> ")
        let ping = try ns.exec(["ping", "-c", "100", "-i", "0.01", "-W", "2", NetNamespace.guest], timeout: 40)
        let counts = pingCounts(ping.text)
        #expect(counts != nil && counts!.transmitted == 100 && counts!.received == 100, "\(ping.text)")
        let net = try vm.command("net")
        #expect(net.contains("net0: mac 52:54:00:12:34:56 link up mtu 1500"), "\(net)")
        #expect(echoReplies(net) == counts?.transmitted, "\(net)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 20) == 0)
        // pvmm counted them: 100 requests in, 100 replies out (plus ARP).
        #expect((statValue(vm.errorText, "net0.rx_packets") ?? 0) >= 100, "\(vm.errorText)")
        #expect((statValue(vm.errorText, "net0.tx_packets") ?? 0) >= 100, "\(vm.errorText)")
        // Exits stay far below one per packet (ioeventfd + irqfd + EVENT_IDX).
        #expect((statValue(vm.errorText, "exits") ?? .max) < 400, "\(vm.errorText)")
    }

    @Test func udpEchoOnPort7ReturnsDatagramsUnchanged() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootPVMM(Self.tap)
        try vm.expect("pvos> ")
        var seed: UInt32 = 777
        for size in [1, 1400, 1472] {  // 1472: a full 1500-byte MTU datagram
            let data = (0..<size).map { _ -> UInt8 in seed = seed &* 1_103_515_245 &+ 12345; return UInt8(truncatingIfNeeded: seed >> 16) }
            let file = try Paths.temporaryFile("pvmm-udp-\(size).bin", data)
            let socat = try ns.exec(["sh", "-c", "socat -T 5 -t 1 - UDP:\(NetNamespace.guest):7 < \(file)"], timeout: 20)
            #expect(socat.stdout == data, "\(size) bytes sent, \(socat.stdout.count) came back")
        }
        #expect(try vm.command("net").contains("udp in 3 echoed 3"))
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 20) == 0)
        #expect(statValue(vm.errorText, "net0.tx_bytes").map { $0 >= 1 + 1400 + 1472 } == true, "\(vm.errorText)")
    }

    /// UDP segmentation offload: the guest hands pvmm frames of up to 128 datagrams
    /// (HOST_USO); pvmm passes them to the tap whole and the host kernel cuts them, so a
    /// socket on the host receives separate datagrams of exactly the size sent, each with
    /// the guest's payload and source port.
    @Test func segmentedUDPArrivesAsSeparateDatagrams() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootPVMM(Self.tap)
        try vm.expect("pvos> ")
        let script = """
        import socket, time
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        s.bind(("\(NetNamespace.host)", 9999)); s.settimeout(0.5)
        print("ready", flush=True)
        n = bad = 0; end = time.time() + 8; idle = 0
        while time.time() < end and idle < 4:
            try:
                d, a = s.recvfrom(4096); idle = 0
                if len(d) == 100 and d == b"\\x5a" * 100 and a[1] == 40009: n += 1
                else: bad += 1
            except socket.timeout: idle += 1 if n else 0
        print("got", n, "bad", bad)
        """
        let sink = try Child(["/usr/sbin/ip", "netns", "exec", ns.name, "python3", "-c", script])
        try sink.expect("ready", timeout: 10)
        let out = try vm.command("net bench tx \(NetNamespace.host) 9999 1 100", timeout: 30)
        #expect(out.contains("datagrams (UDP segmentation offload)"), "\(out)")
        try sink.wait(timeout: 20)
        let words = sink.text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        let got = words.firstIndex(of: "got").flatMap { Int(words[$0 + 1]) } ?? 0
        let bad = words.firstIndex(of: "bad").flatMap { Int(words[$0 + 1]) } ?? -1
        #expect(got > 256 && bad == 0, "\(sink.text) \(sink.errorText)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 20) == 0)
        // pvmm sent segmentation frames, far fewer than the datagrams that arrived.
        let frames = statValue(vm.errorText, "net0.tx_uso_frames") ?? 0
        #expect(frames > 0 && frames * 2 < UInt64(got), "\(frames) frames for \(got) datagrams: \(vm.errorText)")
        #expect(statValue(vm.errorText, "net0.tx_drop_error") == 0, "\(vm.errorText)")
    }

    /// The other way: the host sends with UDP_SEGMENT (Linux's UDP GSO), pvmm has the tap
    /// hand it the segmentation frames whole (GUEST_USO4/6), and pvos splits each into its
    /// datagrams: the echo service answers every one of them separately.
    @Test func segmentedUDPFromTheHostIsEchoedDatagramByDatagram() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootPVMM(Self.tap)
        try vm.expect("pvos> ")
        let script = """
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
        s.connect(("\(NetNamespace.guest)", 7))
        s.setsockopt(17, 103, 100)   # SOL_UDP, UDP_SEGMENT: 100-byte datagrams
        for r in range(5):
            s.send(b"".join(bytes([8 * r + i]) * 100 for i in range(8)))
        got = []
        try:
            while len(got) < 40: got.append(s.recv(2048))
        except socket.timeout: pass
        ok = sorted(g[0] for g in got if len(g) == 100 and g == bytes([g[0]]) * 100)
        print("replies", len(got), "distinct", len(set(ok)))
        """
        let host = try ns.exec(["python3", "-c", script], timeout: 30)
        #expect(host.text.contains("replies 40 distinct 40"), "\(host.text) \(host.errorText)")
        let net = try vm.command("net")
        #expect(net.contains("udp in 40 echoed 40"), "\(net)")
        let segmented = net.range(of: "rx segmented ").flatMap { UInt64(net[$0.upperBound...].prefix { $0.isNumber }) } ?? 0
        #expect(segmented >= 1 && segmented <= 5, "\(net)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 20) == 0)
    }

    @Test func guestPingReachesTheHost() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootPVMM(Self.tap)
        try vm.expect("pvos> ")
        let out = try vm.command("ping \(NetNamespace.host) 5", timeout: 20)
        // pvos waits 1 s per reply: on a loaded machine (the suites run in parallel) one
        // can be late, so at least 4 of 5 replies, each from the host.
        #expect(out.contains("reply from \(NetNamespace.host) time="), "\(out)")
        #expect(out.contains("ping: 5 sent, 5 received, 0% loss") || out.contains("ping: 5 sent, 4 received"), "\(out)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 20) == 0)
    }

    /// 5 s of garbage at the guest's tap at full speed (raw AF_PACKET): runts, frames over
    /// the MTU, IPv4/UDP/ICMP with bad checksums, random bytes. Guest and VMM keep
    /// answering; pvmm's and the guest's drop counters rise.
    @Test func garbageFromTheHostIsDroppedAndTheGuestKeepsAnswering() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootPVMM(Self.tap)
        try vm.expect("pvos> ")
        // Larger host MTU after pvmm opened the tap (it advertised 1500): oversize frames
        // now reach the device, which must drop them.
        try ns.exec(["ip", "link", "set", "tap0", "mtu", "9000"])
        let script = """
        import os, random, socket, struct, time
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(("tap0", 0))
        guest = bytes.fromhex("525400123456"); me = bytes(6)
        def ip(proto, payload, good=False):
            h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0xdead,
                            socket.inet_aton("\(NetNamespace.host)"), socket.inet_aton("\(NetNamespace.guest)"))
            return guest + me + b"\\x08\\x00" + h + payload
        r = random.Random(1); n = 0; end = time.time() + 5
        while time.time() < end:
            k = n % 6
            if k == 0: f = guest + os.urandom(r.randrange(0, 8))                   # runt
            elif k == 1: f = guest + me + b"\\x08\\x00" + os.urandom(r.randrange(1600, 8900))  # over the MTU
            elif k == 2: f = ip(17, struct.pack("!HHHH", 1234, 7, 8 + 16, 0xbeef) + os.urandom(16))  # bad UDP/IP sums
            elif k == 3: f = ip(1, b"\\x08\\x00\\x12\\x34" + os.urandom(60))       # bad ICMP
            elif k == 4: f = os.urandom(r.randrange(14, 1514))                     # random bytes
            else: f = guest + me + bytes([r.randrange(256), r.randrange(256)]) + os.urandom(100)  # odd ethertypes
            try: s.send(f)
            except OSError: pass
            n += 1
        print(n)
        """
        // Niced: as fast as it can, but the suites running alongside (and the VM) keep
        // their CPU on a 2-core machine.
        let blast = try Child(["/usr/sbin/ip", "netns", "exec", ns.name, "nice", "-n", "19", "python3", "-c", script])
        // While it runs the guest still answers the host.
        Thread.sleep(forTimeInterval: 1)
        // The tap's queue is full of garbage, so some requests are lost on the host side;
        // the guest must still answer the ones that reach it.
        let during = try Child(["/usr/sbin/ip", "netns", "exec", ns.name, "ping", "-c", "20", "-i", "0.1", "-W", "2", NetNamespace.guest])
        _ = try during.wait(timeout: 30)
        #expect(during.text.contains("bytes from \(NetNamespace.guest)"), "\(during.text)")
        try blast.wait(timeout: 30)
        let sent = Int(blast.text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        #expect(sent > 1000, "garbage frames sent: \(blast.text) \(blast.errorText)")
        let after = try ns.exec(["ping", "-c", "10", "-i", "0.05", "-W", "2", NetNamespace.guest], timeout: 30)
        #expect(after.text.contains("10 received, 0% packet loss"), "\(after.text)")
        let net = try vm.command("net")
        let guestDrops = net.split(whereSeparator: \.isNewline).first { $0.hasPrefix("net0: drops ") }
            .flatMap { UInt64($0.dropFirst("net0: drops ".count).prefix { $0.isNumber }) } ?? 0
        #expect(guestDrops > 1000, "\(net)")
        #expect(try vm.command("echo still here").contains("still here"))
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 20) == 0)
        // Frames over the MTU never reach the guest: pvmm drops and counts them. (Runts
        // arrive padded to 14 bytes by AF_PACKET and go to the guest, which drops them.)
        #expect((statValue(vm.errorText, "net0.rx_drop_too_big") ?? 0) > 100, "\(vm.errorText)")
    }

    @Test func twoVMsOnOneBridgePingEachOther() throws {
        let ns = try NetNamespace()
        for cmd in [["ip", "tuntap", "add", "dev", "tap1", "mode", "tap"], ["ip", "link", "add", "br0", "type", "bridge"],
                    ["ip", "addr", "del", "\(NetNamespace.host)/24", "dev", "tap0"],
                    ["ip", "link", "set", "tap0", "master", "br0"], ["ip", "link", "set", "tap1", "master", "br0"],
                    ["ip", "link", "set", "tap1", "up"], ["ip", "link", "set", "br0", "up"]] {
            try ns.exec(cmd)
        }
        let a = try ns.bootPVMM(["--net", "tap=tap0,mac=52:54:00:00:00:0a"], cmdline: "ip=10.77.0.10/24")
        let b = try ns.bootPVMM(["--net", "tap=tap1,mac=52:54:00:00:00:0b"], cmdline: "ip=10.77.0.11/24")
        try a.expect("pvos> ")
        try b.expect("pvos> ")
        let ab = try a.command("ping 10.77.0.11 5", timeout: 20)
        #expect(ab.contains("ping: 5 sent, 5 received, 0% loss"), "\(ab)")
        let ba = try b.command("ping 10.77.0.10 5", timeout: 20)
        #expect(ba.contains("ping: 5 sent, 5 received, 0% loss"), "\(ba)")
        for vm in [a, b] {
            vm.send("poweroff\n")
            #expect(try vm.wait(timeout: 20) == 0)
        }
    }

    /// An unprivileged user (made here, given /dev/kvm through an ACL for the test only):
    /// pvmm starts passt, the guest gets its address by DHCP and exchanges UDP with an echo
    /// server on the host through it. No tap, no root.
    @Test func passtGivesAnUnprivilegedVMDHCPAndUDP() throws {
        let user = "pvmmnet"
        var made = false
        if (try? NetNamespace.run(["/usr/bin/id", user])) == nil {
            try NetNamespace.run(["/usr/sbin/useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user])
            made = true
        }
        // A user this test made goes with it (after the VM and passt are gone: defers run last-in first-out).
        defer { if made { _ = try? NetNamespace.run(["/usr/sbin/userdel", user]) } }
        try NetNamespace.run(["/usr/bin/setfacl", "-m", "u:\(user):rw", "/dev/kvm"])
        defer { _ = try? NetNamespace.run(["/usr/bin/setfacl", "-x", "u:\(user)", "/dev/kvm"]) }
        // passt needs a host interface with a default route to copy: a veth pair inside
        // the namespace (the gateway address exists nowhere; passt maps it to the host).
        let ns = try NetNamespace()
        for cmd in [["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"], ["ip", "addr", "add", "10.78.0.1/24", "dev", "v0"],
                    ["ip", "link", "set", "v0", "up"], ["ip", "link", "set", "v1", "up"], ["ip", "route", "add", "default", "via", "10.78.0.254"]] {
            try ns.exec(cmd)
        }
        // The echo server also appends what it gets to a file the test reads.
        let log = try Paths.temporaryFile("pvmm-passt-echo.txt", [])
        _ = chmod(log, 0o666)
        let echo = try Child(["/usr/sbin/ip", "netns", "exec", ns.name, "socat", "-T", "20", "UDP4-RECVFROM:7777,fork",
                              "SYSTEM:tee -a \(log)"])
        let vm = try ns.bootPVMM(["--net", "passt"], cmdline: "ip=dhcp", user: user)
        try vm.expect("net0: dhcp 10.78.0.1/24 gateway 10.78.0.254", timeout: 20)
        try vm.expect("pvos> ")
        let before = try vm.command("net")
        #expect(before.contains("link up"), "\(before)")
        // More than 18 bytes of payload: this passt drops frames padded to 60 bytes.
        let text = "hello through passt, from pvos"
        #expect(try vm.command("udp send 10.78.0.254 7777 \(text)", timeout: 20).contains("udp: sent \(text.utf8.count) bytes"))
        var got = ""
        for _ in 0..<50 where !got.contains(text) {
            got = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if !got.contains(text) { Thread.sleep(forTimeInterval: 0.1) }
        }
        #expect(got == text, "the host's echo server got \(got.debugDescription)")
        // The echo came back: one more UDP datagram in than after DHCP.
        var answered = false
        for _ in 0..<20 where !answered {
            let net = try vm.command("net")
            answered = net.contains("udp in 3 ")
            if !answered { Thread.sleep(forTimeInterval: 0.1) }
        }
        #expect(answered)
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 20) == 0)
        _ = echo
        #expect((statValue(vm.errorText, "net0.rx_packets") ?? 0) >= 3, "\(vm.errorText)")
        // passt ended with the VM.
        let left = try Child(["/usr/bin/pgrep", "-u", user, "passt"])
        _ = try left.wait(timeout: 5)
        #expect(left.text.isEmpty, "passt still running: \(left.text)")
    }

    /// `net evil` breaks the ring rules; pvmm answers DEVICE_NEEDS_RESET for each, keeps
    /// the console working, and the driver's reset brings the device back.
    @Test func evilDriverGetsNeedsResetAndRecovers() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootPVMM(Self.tap)
        try vm.expect("pvos> ")
        let out = try vm.command("net evil all \(NetNamespace.host)", timeout: 40)
        for mode in ["rx-outside", "loop", "big", "jump"] {
            #expect(out.contains("net evil: \(mode): status 0x4f needs-reset"), "\(mode): \(out)")
        }
        #expect(out.contains("net evil: net0 reset and re-initialised"), "\(out)")
        // The host's neighbour entry for the guest may have failed while its receive
        // buffers were bad (rx-outside): one ping lets ARP settle again.
        _ = try vm.command("ping \(NetNamespace.host) 1", timeout: 20)
        let ping = try vm.command("ping \(NetNamespace.host) 3", timeout: 20)
        #expect(ping.contains("3 received, 0% loss"), "\(ping)")
        let host = try ns.exec(["ping", "-c", "5", "-i", "0.1", "-W", "2", NetNamespace.guest], timeout: 20)
        #expect(host.text.contains("5 received, 0% packet loss"), "\(host.text)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 20) == 0)
        #expect(vm.errorText.contains("pvmm: virtio-net net0: DEVICE_NEEDS_RESET"), "\(vm.errorText)")
    }

    @Test func startupErrorsNameTheFlag() throws {
        // A missing tap without CAP_NET_ADMIN: the message says what to do.
        let ns = try NetNamespace()
        let noCap = try Child(["/usr/sbin/ip", "netns", "exec", ns.name, "/usr/bin/setpriv", "--inh-caps=-all", "--bounding-set=-net_admin",
                               Paths.pvmm, "run", "--kernel", Paths.guest, "--net", "tap=nosuch0"])
        noCap.closeInput()
        #expect(try noCap.wait(timeout: 20) == 2)
        #expect(noCap.errorText.contains("--net: tap nosuch0 does not exist") && noCap.errorText.contains("CAP_NET_ADMIN")
                && noCap.errorText.contains("ip tuntap add dev nosuch0 mode tap"), "\(noCap.errorText)")
        for (spec, message) in [("fd=0", "is not an attached tap device"), ("fd=100000", "is not an open file descriptor"),
                                ("passt=/nonexistent/passt.sock", "does not answer"),
                                ("tap=tap0,mac=01:02:03:04:05:06", "not a unicast MAC address")] {
            let c = try Child([Paths.pvmm, "run", "--kernel", Paths.guest, "--net", spec])
            c.closeInput()
            #expect(try c.wait(timeout: 20) == 2, "\(spec)")
            #expect(c.errorText.contains("--net") && c.errorText.contains(message), "\(spec): \(c.errorText)")
        }
    }
}
