import Foundation
import Testing

/// A network namespace made for one test, with a tap `tap0` at 10.77.0.1/24 inside it;
/// deinit deletes the namespace, which removes the tap too. Only addresses inside it are
/// used. Scripts/test installs iproute2, iputils-ping and socat.
final class NetNamespace {
    let name: String
    static let host = "10.77.0.1", guest = "10.77.0.2"

    init() throws {
        name = "pvos-net-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        _ = try Self.run(["/usr/sbin/ip", "netns", "add", name])
        do {
            for cmd in [["ip", "link", "set", "lo", "up"], ["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"],
                        ["ip", "addr", "add", "\(Self.host)/24", "dev", "tap0"], ["ip", "link", "set", "tap0", "up"]] {
                _ = try exec(cmd)
            }
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

    /// QEMU microvm inside the namespace with a virtio-net-device on tap0, serial on stdio.
    func bootQEMU(cmdline: String = "ip=\(guest)/24,\(host)") throws -> Child {
        let qemu = "/usr/bin/qemu-system-x86_64"
        guard FileManager.default.isExecutableFile(atPath: qemu) else {
            throw HarnessError(description: "\(qemu) is missing: run Scripts/test, which installs qemu-system-x86")
        }
        return try Child(["/usr/sbin/ip", "netns", "exec", name, qemu,
                          "-M", "microvm,x-option-roms=off,rtc=off,pit=off,pic=off",
                          "-enable-kvm", "-cpu", "host,-arch-capabilities", "-m", "128",
                          "-no-reboot", "-nodefaults", "-display", "none", "-monitor", "none",
                          "-serial", "stdio", "-kernel", Paths.guest, "-append", cmdline,
                          "-global", "virtio-mmio.force-legacy=false",
                          "-device", "virtio-net-device,netdev=n0,mac=52:54:00:77:00:02",
                          "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
    }
}

/// pvos's virtio-net driver and network stack against QEMU's virtio-net-device (an
/// independent implementation) on a tap, talking to the Linux host stack.
@Suite(.serialized) struct QEMUNetTests {
    @Test func hostPingsGuestWithoutLoss() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootQEMU()
        try vm.expect("pvos> ", timeout: 30)
        let ping = try ns.exec(["ping", "-c", "20", "-i", "0.05", "-W", "2", "-w", "20", NetNamespace.guest], timeout: 30)
        #expect(ping.text.contains("20 received, 0% packet loss"), "\(ping.text)")
        let net = try vm.command("net", timeout: 30)
        #expect(net.contains("net0: mac 52:54:00:77:00:02 link up"), "\(net)")
        #expect(net.contains("net0: ip 10.77.0.2/24 gateway 10.77.0.1 (static)"), "\(net)")
        #expect(net.contains("echo replies 20"), "\(net)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }

    @Test func udpEchoReturnsDatagramsUnchanged() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootQEMU()
        try vm.expect("pvos> ", timeout: 30)
        var seed: UInt32 = 12345
        for size in [1, 1400, 1472] {   // 1472: a full 1500-byte IP datagram
            let data = (0..<size).map { _ -> UInt8 in seed = seed &* 1_103_515_245 &+ 12345; return UInt8(truncatingIfNeeded: seed >> 16) }
            let file = try Paths.temporaryFile("udp-\(size).bin", data)
            let socat = try ns.exec(["sh", "-c", "socat -T 5 -t 1 - UDP:\(NetNamespace.guest):7 < \(file)"], timeout: 20)
            #expect(socat.stdout == data, "\(size) bytes sent, \(socat.stdout.count) came back")
        }
        let net = try vm.command("net", timeout: 30)
        #expect(net.contains("udp in 3 echoed 3"), "\(net)")
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }

    @Test func guestPingsHostAndSendsUDP() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootQEMU()
        try vm.expect("pvos> ", timeout: 30)
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

    @Test func evilModesResetQEMUsDeviceAndTheDriverRecovers() throws {
        let ns = try NetNamespace()
        let vm = try ns.bootQEMU()
        try vm.expect("pvos> ", timeout: 30)
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

    @Test func dhcpFromQEMUsUserNetwork() throws {
        // QEMU's user-mode network (slirp) has its own DHCP server: 10.0.2.15, gateway 10.0.2.2.
        // Inside an empty namespace of its own, so nothing can leave the machine.
        let ns = try NetNamespace()
        let vm = try Child(["/usr/sbin/ip", "netns", "exec", ns.name, "/usr/bin/qemu-system-x86_64", "-M", "microvm,x-option-roms=off,rtc=off,pit=off,pic=off",
                            "-enable-kvm", "-cpu", "host,-arch-capabilities", "-m", "128",
                            "-no-reboot", "-nodefaults", "-display", "none", "-monitor", "none",
                            "-serial", "stdio", "-kernel", Paths.guest, "-append", "ip=dhcp",
                            "-global", "virtio-mmio.force-legacy=false",
                            "-device", "virtio-net-device,netdev=n0", "-netdev", "user,id=n0"])
        try vm.expect("net0: dhcp 10.0.2.15/24 gateway 10.0.2.2 lease", timeout: 30)
        #expect(try vm.command("net", timeout: 30).contains("net0: ip 10.0.2.15/24 gateway 10.0.2.2 (dhcp)"))
        #expect(try vm.command("ping 10.0.2.2 1", timeout: 30).contains("1 received, 0% loss"))
        vm.send("poweroff\n")
        #expect(try vm.wait(timeout: 30) == 0)
    }
}
