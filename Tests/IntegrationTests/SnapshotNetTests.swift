import Foundation
import Testing

/// A snapshot of a VM with virtio-net (docs/snapshot.md): the restored guest answers
/// pings on a new backend given with `--net`, and a `--net` count that does not match the
/// snapshot is a usage error.
@Suite(.serialized) struct SnapshotNetTests {
    /// pvmm-vmm inside the namespace (its tap is only visible there), with a control socket.
    static func vmm(_ ns: NetNamespace, _ args: [String], socket: String) throws -> Child {
        try Child(["/usr/sbin/ip", "netns", "exec", ns.name, Paths.binDir + "/pvmm-vmm"] + args
                  + ["--control", socket, "--no-stdio"])
    }

    @Test func restoredVMAnswersPingsOnItsNewBackend() throws {
        let ns = try NetNamespace()
        let dir = try SnapshotTests.scratch("net")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = dir + "/vm.json"
        try JSONSerialization.data(withJSONObject: [
            "kernel": Paths.guest, "cmdline": "ip=\(NetNamespace.guest)/24,\(NetNamespace.host)", "nets": [["tap": "tap0"]],
        ]).write(to: URL(fileURLWithPath: config))
        let snap = dir + "/snap"
        let original = try Self.vmm(ns, ["--config", config], socket: dir + "/a.sock")
        let con = try ControlConnection(path: dir + "/a.sock")
        _ = try con.request(#"{"op":"console","replay":true}"#)
        try con.expect("pvos> ")
        let ping = try ns.exec(["ping", "-c", "3", "-i", "0.05", "-W", "2", NetNamespace.guest], timeout: 20)
        #expect(ping.text.contains("3 received"), "\(ping.text)")
        let r = try ControlConnection(path: dir + "/a.sock").request(#"{"op":"snapshot","path":"\#(snap)"}"#, timeout: 30)
        #expect(r["ok"] as? Bool == true, "\(r)")
        _ = try? ControlConnection(path: dir + "/a.sock").request(#"{"op":"kill"}"#)
        _ = try original.wait(timeout: 10)

        let (status, err) = try runPVMMToEnd(["--restore", snap, "--net", "tap=tap0", "--net", "tap=tap1"])
        #expect(status == 2 && err.contains("--net: given 2 times, the snapshot has 1 net devices"), "\(err)")

        let clone = try Self.vmm(ns, ["--restore", snap, "--net", "tap=tap0"], socket: dir + "/b.sock")
        let c = try ControlConnection(path: dir + "/b.sock")
        _ = try c.request(#"{"op":"console","replay":false}"#)
        #expect(try c.command("echo restored").contains("restored\r\n"))
        let again = try ns.exec(["ping", "-c", "5", "-i", "0.05", "-W", "2", "-w", "15", NetNamespace.guest], timeout: 20)
        #expect(again.text.contains("5 received"), "\(again.text)")
        #expect(try c.command("net").contains("net0: mac 52:54:00:12:34:56 link up"))
        _ = try? ControlConnection(path: dir + "/b.sock").request(#"{"op":"kill"}"#)
        _ = try clone.wait(timeout: 10)
    }
}
