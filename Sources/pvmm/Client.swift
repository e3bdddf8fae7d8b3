import ArgumentParser
import DaemonClient
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// `--socket` for every client command (else $PVMM_SOCKET, else /run/pvmm/pvmm.sock).
struct DaemonSocket: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The daemon's socket (default: $PVMM_SOCKET, else \(DaemonClient.defaultSocket)).",
                                            valueName: "path"))
    var socket: String?

    var client: DaemonClient { DaemonClient(socket: socket) }
}

/// Runs a client call; daemon and transport errors become a message and status 1
/// (a request the daemon refused as invalid: 2, like any bad input).
func clientCall<T>(_ body: () throws(ClientError) -> T) throws(UsageError) -> T {
    do { return try body() } catch {
        if case .api(let status, _, _) = error { throw UsageError(message: error.description, status: status == 400 ? 2 : 1) }
        throw UsageError(message: error.description, status: 1)
    }
}

struct DaemonCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon",
        abstract: "Run the pvmm daemon in the foreground: the REST API on a Unix socket (docs/api.md).",
        discussion: "Options: --socket PATH (default /run/pvmm/pvmm.sock), --state-dir DIR (default /var/lib/pvmm), --log-format text|json. SIGTERM stops the daemon and leaves its VMs running; the next daemon finds them again.")

    @Argument(parsing: .captureForPassthrough, help: "Options for the daemon (see above).")
    var arguments: [String] = []

    func run() throws {
        // The server (NIO, Hummingbird) lives in its own executable, so `pvmm run` and the
        // client commands never load it.
        try Executables.exec(Executables.sibling("pvmmd"), arguments)
    }
}

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the daemon's VMs.")
    @OptionGroup var daemon: DaemonSocket

    func run() throws {
        let reply = try clientCall { () throws(ClientError) in try daemon.client.send("GET", "/v1/vms") }
        guard case .array(let vms)? = reply.json else { throw UsageError(message: "bad answer from the daemon", status: 1) }
        var rows = [["NAME", "STATE", "CPUS", "MEMORY", "UPTIME", "LAST EXIT"]]
        for vm in vms {
            let config = vm["config"]
            rows.append([vm["name"]?.stringValue ?? "?", vm["state"]?.stringValue ?? "?",
                         config?["cpus"]?.intValue.map(String.init) ?? "?",
                         config?["memory_mib"]?.intValue.map { "\($0) MiB" } ?? "?",
                         formatUptime(vm), formatExit(vm["last_exit"])])
        }
        print(alignedTable(rows), terminator: "")
    }
}

struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Define a VM in the daemon (from `pvmm run` flags, or a JSON definition with --config).")
    @Argument(help: "The VM's name: [a-z0-9][a-z0-9-]{0,62}.")
    var name: String
    @OptionGroup var vm: Run
    @OptionGroup var daemon: DaemonSocket

    func run() throws {
        if let dir = vm.restore {
            // The daemon reads the snapshot's definition; the VM's first start resumes it.
            let body = JSONValue.object([("name", .string(name)), ("restore", .string(absolutePath(dir)))])
            let reply = try clientCall { () throws(ClientError) in try daemon.client.send("POST", "/v1/vms", json: body) }
            print("\(reply.json?["name"]?.stringValue ?? name): \(reply.json?["state"]?.stringValue ?? "created") (from \(dir))")
            return
        }
        var (definition, _) = try vm.definition()
        if let n = definition.name, n != name {
            throw UsageError(message: "--config: the file names the VM '\(n)', the command '\(name)'")
        }
        definition.name = name
        let reply = try clientCall { () throws(ClientError) in try daemon.client.send("POST", "/v1/vms", json: definition.json) }
        print("\(reply.json?["name"]?.stringValue ?? name): \(reply.json?["state"]?.stringValue ?? "created")")
    }
}

/// start, pause, resume, stop, kill, reboot: POST with ?wait=true, then print the state
/// reached. Each is its own type only because ArgumentParser needs one per subcommand.
protocol LifecycleCommand: ParsableCommand {
    static var action: String { get }
    var name: String { get }
    var daemon: DaemonSocket { get }
    var query: String { get }
}

extension LifecycleCommand {
    var query: String { "" }

    func run() throws {
        let reply = try clientCall { () throws(ClientError) in
            try daemon.client.send("POST", "/v1/vms/\(name)/\(Self.action)?wait=true\(query)")
        }
        let state = reply.json?["state"]?.stringValue ?? "?"
        if reply.status == 202 {
            print("\(name): \(state) (still in progress: the wait timed out)")
        } else {
            let ended = state == "stopped" || state == "crashed"
            print("\(name): \(state)" + (ended ? " (\(formatExit(reply.json?["last_exit"])))" : ""))
        }
    }
}

struct StartCommand: LifecycleCommand {
    static let configuration = CommandConfiguration(commandName: "start", abstract: "Start a VM and wait until it runs.")
    static let action = "start"
    @Argument var name: String
    @OptionGroup var daemon: DaemonSocket
}

struct PauseCommand: LifecycleCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "Pause a running VM (all vCPUs out of the guest).")
    static let action = "pause"
    @Argument var name: String
    @OptionGroup var daemon: DaemonSocket
}

struct ResumeCommand: LifecycleCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Resume a paused VM.")
    static let action = "resume"
    @Argument var name: String
    @OptionGroup var daemon: DaemonSocket
}

struct StopCommand: LifecycleCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop", abstract: "Ask the guest to power off; after --timeout seconds the VMM stops it itself.")
    static let action = "stop"
    @Argument var name: String
    @Option(help: ArgumentHelp("Seconds the guest has to power off.", valueName: "s")) var timeout: Int = 10
    @OptionGroup var daemon: DaemonSocket
    var query: String { "&timeout_s=\(timeout)" }
}

struct KillCommand: LifecycleCommand {
    static let configuration = CommandConfiguration(commandName: "kill", abstract: "End a VM now, without the guest's involvement.")
    static let action = "kill"
    @Argument var name: String
    @OptionGroup var daemon: DaemonSocket
}

struct RebootCommand: LifecycleCommand {
    static let configuration = CommandConfiguration(
        commandName: "reboot", abstract: "Reset a VM in place: same name, memory size, disks and console history.")
    static let action = "reboot"
    @Argument var name: String
    @OptionGroup var daemon: DaemonSocket
}

struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Save a running or paused VM into a directory (docs/snapshot.md); it is left as it was.")
    @Argument var name: String
    @Argument(help: "The snapshot directory (created if missing); `pvmm create NAME2 --restore DIR` or `pvmm run --restore DIR` runs it.")
    var dir: String
    @OptionGroup var daemon: DaemonSocket

    func run() throws {
        let body = JSONValue.object([("path", .string(absolutePath(dir)))])
        let reply = try clientCall { () throws(ClientError) in try daemon.client.send("POST", "/v1/vms/\(name)/snapshot", json: body) }
        let kib = (reply.json?["memory_bytes"]?.intValue ?? 0) >> 10
        print("\(name): snapshot in \(dir) (\(kib) KiB of memory, paused \(reply.json?["paused_us"]?.intValue ?? 0) us)")
    }
}

/// The daemon resolves paths itself: a relative one must mean the caller's directory.
func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    var buf = [CChar](repeating: 0, count: 4096)
    guard getcwd(&buf, buf.count) != nil else { return path }
    return String(cString: buf) + "/" + path
}

struct RemoveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete a VM that is not running (its definition and files).")
    @Argument var name: String
    @OptionGroup var daemon: DaemonSocket
    func run() throws {
        try clientCall { () throws(ClientError) in try daemon.client.send("DELETE", "/v1/vms/\(name)") }
        print("\(name): deleted")
    }
}

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "Show a VM's definition and state.")
    @Argument var name: String
    @Flag(help: "Print the API's JSON object as it is.") var json = false
    @OptionGroup var daemon: DaemonSocket

    func run() throws {
        let reply = try clientCall { () throws(ClientError) in try daemon.client.send("GET", "/v1/vms/\(name)") }
        guard let vm = reply.json else { throw UsageError(message: "bad answer from the daemon", status: 1) }
        if json { print(vm.encoded); return }
        let c = vm["config"]
        var rows: [[String]] = [
            ["name:", vm["name"]?.stringValue ?? name], ["state:", vm["state"]?.stringValue ?? "?"],
            ["pid:", vm["pid"]?.intValue.map(String.init) ?? "-"], ["uptime:", formatUptime(vm)],
            ["cpus:", c?["cpus"]?.intValue.map(String.init) ?? "?"],
            ["memory:", c?["memory_mib"]?.intValue.map { "\($0) MiB" } ?? "?"],
            ["kernel:", c?["kernel"]?.stringValue ?? "?"], ["cmdline:", c?["cmdline"]?.stringValue ?? ""],
            ["console:", c?["console"]?.stringValue ?? "?"],
        ]
        if case .array(let disks)? = c?["disks"] {
            for (i, d) in disks.enumerated() {
                rows.append(["disk \(i):", (d["path"]?.stringValue ?? "?") + (d["readonly"]?.boolValue == true ? " (read-only)" : "")])
            }
        }
        if case .array(let nets)? = c?["nets"] {
            for (i, n) in nets.enumerated() { rows.append(["net \(i):", n.encoded]) }
        }
        rows.append(["last exit:", formatExit(vm["last_exit"])])
        print(alignedTable(rows), terminator: "")
    }
}

struct LogsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print a VM's console output (the ring's content; -f follows).")
    @Flag(name: .shortAndLong, help: "Keep printing new output until interrupted.") var follow = false
    @Argument var name: String
    @OptionGroup var daemon: DaemonSocket
    func run() throws {
        try clientCall { () throws(ClientError) in
            try daemon.client.send("GET", "/v1/vms/\(name)/logs?follow=\(follow)") { bytes in
                writeStdout(bytes)
                return true
            }
        }
    }
}

struct EventsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "events", abstract: "Print every VM state change as a JSON line, as it happens.")
    @OptionGroup var daemon: DaemonSocket
    func run() throws {
        try clientCall { () throws(ClientError) in
            try daemon.client.send("GET", "/v1/events") { bytes in
                writeStdout(bytes)
                return true
            }
        }
    }
}

struct ConsoleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console",
        abstract: "Attach this terminal to a VM's console (Ctrl-] detaches; the VM keeps running).")
    @Argument var name: String
    @OptionGroup var daemon: DaemonSocket
    func run() throws {
        let detached = try clientCall { () throws(ClientError) in try ConsoleAttach(client: daemon.client, name: name).run() }
        if !detached { writeStdout(Array("\r\npvmm: the console of \(name) closed (the VM ended?)\r\n".utf8)) }
    }
}

func writeStdout(_ bytes: [UInt8]) {
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        off += n
    }
}

/// Columns padded to their widest cell, two spaces apart.
func alignedTable(_ rows: [[String]]) -> String {
    let widths = (0..<(rows.map(\.count).max() ?? 0)).map { c in rows.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
    return rows.map { row in
        var line = ""
        for (c, cell) in row.enumerated() {
            line += cell
            if c < row.count - 1 { line += String(repeating: " ", count: widths[c] - cell.count + 2) }
        }
        return line + "\n"
    }.joined()
}

func formatUptime(_ vm: JSONValue) -> String {
    guard let state = vm["state"]?.stringValue, ["running", "paused", "stopping", "starting"].contains(state),
          case .number(let t)? = vm["uptime_ns"], let ns = UInt64(t) else { return "-" }
    let s = ns / 1_000_000_000
    if s < 60 { return "\(s)s" }
    if s < 3600 { return "\(s / 60)m\(pad2(s % 60))s" }
    if s < 86400 { return "\(s / 3600)h\(pad2((s / 60) % 60))m" }
    return "\(s / 86400)d\(pad2((s / 3600) % 24))h"
}

private func pad2(_ n: UInt64) -> String { n < 10 ? "0\(n)" : "\(n)" }

func formatExit(_ e: JSONValue?) -> String {
    guard let e, e != .null else { return "-" }
    if e["state"]?.stringValue == "stopped" { return "status \(e["exit_status"]?.intValue.map(String.init) ?? "?")" }
    var s = "crashed: " + (e["reason"]?.stringValue ?? "?")
    if let v = e["vector"]?.intValue { s += " (vector \(v))" }
    return s
}
