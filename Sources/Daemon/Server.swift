import DaemonClient
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import VMDefinition
import NIOCore
import ServiceLifecycle
import VMControl

/// `pvmm daemon` options.
public struct DaemonOptions: Sendable {
    public var socket = "/run/pvmm/pvmm.sock"
    public var stateDir = "/var/lib/pvmm"
    public var logFormat = "text"
    /// Test aid only (`--test-tcp-port`): the same API on 127.0.0.1:PORT as well, so
    /// HTTP tools without Unix-socket support (schemathesis) can reach it.
    public var testTCPPort: Int?
    public var vmm: String?
    /// Every VMM runs jailed (`pvmm-vmm --jail`, docs/security.md): the default for a
    /// daemon run as root (the jail needs namespaces and cgroups); `--no-jail` turns it
    /// off, and `--jail` asks for it explicitly (refused when not root).
    public var jail = geteuid() == 0
    /// Test aid only (`--test-vmm-args NAME=ARG,ARG`): extra pvmm-vmm arguments for the
    /// VM NAME (a debug build's `--seccomp-test-violation`; release VMMs refuse it).
    public var testVMMArguments: [String: [String]] = [:]

    public init() {}

    public static let usage = """
        usage: pvmm daemon [--socket PATH] [--state-dir DIR] [--log-format text|json] [--jail|--no-jail]
          --socket PATH      the API's Unix socket (default /run/pvmm/pvmm.sock; mode 0600, its directory 0700)
          --state-dir DIR    VM definitions, states and per-VM files (default /var/lib/pvmm)
          --log-format F     text (default) or json: one JSON object per line on stderr
          --jail             run every VMM jailed (pid/mount/net namespaces, its own root, uid nobody, a cgroup; docs/security.md);
                             the default when the daemon runs as root
          --no-jail          run the VMMs unjailed (seccomp still applies)
        """

    /// Parses the arguments after `daemon`; errors name the flag.
    public init(arguments: [String]) throws(DaemonUsageError) {
        var i = 0
        func value(_ flag: String) throws(DaemonUsageError) -> String {
            guard i + 1 < arguments.count, !arguments[i + 1].isEmpty else { throw DaemonUsageError("\(flag): missing value") }
            i += 1
            return arguments[i]
        }
        while i < arguments.count {
            switch arguments[i] {
            case "--socket": socket = try value("--socket")
            case "--state-dir": stateDir = try value("--state-dir")
            case "--log-format":
                logFormat = try value("--log-format")
                guard ["text", "json"].contains(logFormat) else { throw DaemonUsageError("--log-format: '\(logFormat)' is not text or json") }
            case "--test-tcp-port":
                let v = try value("--test-tcp-port")
                guard let p = Int(v), (1...65535).contains(p) else { throw DaemonUsageError("--test-tcp-port: '\(v)' is not a port") }
                testTCPPort = p
            case "--vmm": vmm = try value("--vmm")
            case "--jail":
                guard geteuid() == 0 else { throw DaemonUsageError("--jail: needs root (the jail makes namespaces and cgroups); run the daemon as root or drop --jail") }
                jail = true
            case "--no-jail": jail = false
            case "--test-vmm-args":
                let v = try value("--test-vmm-args")
                guard let eq = v.firstIndex(of: "="), eq != v.startIndex else { throw DaemonUsageError("--test-vmm-args: '\(v)' is not NAME=ARG,ARG") }
                testVMMArguments[String(v[..<eq]), default: []] += v[v.index(after: eq)...].split(separator: ",").map(String.init)
            case "-h", "--help": throw DaemonUsageError(Self.usage, status: 0)
            case "--version": throw DaemonUsageError(PVMMVersion.text, status: 0)
            case let other: throw DaemonUsageError("\(other): unknown option\n\(Self.usage)")
            }
            i += 1
        }
        if socket.utf8.count > 107 { throw DaemonUsageError("--socket: '\(socket)' is longer than a Unix socket path may be (107 bytes)") }
        // control.sock paths under the state dir must fit in sun_path too (name <= 63).
        if stateDir.utf8.count + "/vms/".utf8.count + 63 + "/control.sock".utf8.count > 107 {
            throw DaemonUsageError("--state-dir: '\(stateDir)' is too long: VM control sockets under it would exceed 107 bytes (keep it under \(107 - 81) bytes)")
        }
    }
}

public struct DaemonUsageError: Error, CustomStringConvertible {
    public let description: String
    public let status: Int32
    public init(_ message: String, status: Int32 = 2) {
        description = message
        self.status = status
    }
}

/// Runs the daemon until SIGTERM or SIGINT: then it stops serving and exits, leaving
/// every VM running (each VMM is in its own session; the next daemon re-adopts them).
public func runDaemon(_ options: DaemonOptions) async throws {
    LoggingSystem.bootstrap { label in
        options.logFormat == "json" ? JSONLogHandler(label: label) as any LogHandler : StreamLogHandler.standardError(label: label)
    }
    let logger = Logger(label: "pvmm")
    // Everything the daemon creates is its user's only: state files 0600, dirs 0700.
    umask(0o077)
    // Each running VM holds two of the daemon's fds (its event stream and its pidfd), each
    // client one: the soft limit (often 1024) would stop it near 500 VMs.
    var limit = rlimit()
    if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    let fm = FileManager.default
    let socketDir = (options.socket as NSString).deletingLastPathComponent
    for dir in [socketDir, options.stateDir] where !dir.isEmpty {
        do {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw DaemonUsageError("cannot create \(dir): \(error.localizedDescription)", status: 1)
        }
    }
    _ = chmod(socketDir.isEmpty ? "." : socketDir, 0o700)
    // One daemon per state directory: a second one would fight over the same VMs.
    let lockFD = open(options.stateDir + "/daemon.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
        throw DaemonUsageError("another pvmm daemon uses \(options.stateDir) (\(options.stateDir)/daemon.lock is locked)", status: 1)
    }
    let vmm = options.vmm ?? siblingExecutable("pvmm-vmm")
    guard access(vmm, X_OK) == 0 else { throw DaemonUsageError("\(vmm) is missing (run Scripts/build)", status: 1) }

    let registry = Registry(stateDir: options.stateDir, vmmExecutable: vmm, logger: logger,
                            vmmArguments: options.jail ? ["--jail"] : [], testVMMArguments: options.testVMMArguments)
    await registry.start()
    let api = API(registry: registry, taps: TapOpener())

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.middlewares.add(JSONErrorMiddleware())
        api.register(on: router)
        return router
    }
    let wsRouter = Router(context: BasicWebSocketRequestContext.self)
    api.registerConsole(on: wsRouter)
    // A client cannot hold the daemon: idle connections close after 60 s, headers are
    // capped at 64 KiB, bodies at 1 MiB (APILimits); NIO serves each connection without
    // a thread of its own, so a slow one costs a few KiB.
    let http1 = HTTP1Channel.Configuration(
        idleTimeout: .seconds(60),
        httpDecoderConfiguration: .init(maxHeaderFieldSize: 16 * 1024, maxHeaderListSize: 64 * 1024, maxHeaderFieldCount: 100))
    let server = HTTPServerBuilder.http1WebSocketUpgrade(
        webSocketRouter: wsRouter,
        configuration: .init(http1: http1, ws: .init(maxFrameSize: 1 << 20, autoPing: .enabled(timePeriod: .seconds(30)))))
    let socketPath = options.socket
    var services: [any Service] = [
        Application(router: makeRouter(), server: server,
                    configuration: .init(address: .unixDomainSocket(path: socketPath), serverName: "pvmm"),
                    onServerRunning: { _ in
                        _ = chmod(socketPath, 0o600)
                        logger.info("serving", metadata: ["socket": "\(socketPath)", "state_dir": "\(options.stateDir)"])
                    }, logger: logger),
    ]
    if let port = options.testTCPPort {
        services.append(Application(router: makeRouter(), server: server,
                                    configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: "pvmm"),
                                    logger: logger))
    }
    // Last in the list, so the first told to shut down: it ends the client streams, then
    // the servers' graceful shutdown has no request left to wait for.
    services.append(RegistryShutdown(registry: registry))
    var config = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    config.maximumGracefulShutdownDuration = .seconds(5)
    config.maximumCancellationDuration = .seconds(2)
    let group = ServiceGroup(configuration: config)
    try await group.run()
    unlink(socketPath)
    logger.info("stopped; VMs keep running")
    close(lockFD)
}

/// `name` next to this executable.
func siblingExecutable(_ name: String) -> String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return ((exe as NSString).deletingLastPathComponent as NSString).appendingPathComponent(name)
}

/// `--log-format json`: one JSON object per line on stderr.
struct JSONLogHandler: LogHandler {
    let label: String
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?, source: String,
             file: String, function: String, line: UInt) {
        var members: [(key: String, value: JSONValue)] = [
            ("ts_ns", .int(wallClockNanoseconds())), ("level", .string(level.rawValue)), ("msg", .string(message.description)),
        ]
        for (k, v) in self.metadata.merging(extra ?? [:], uniquingKeysWith: { $1 }).sorted(by: { $0.key < $1.key }) {
            members.append((k, .string("\(v)")))
        }
        var bytes = JSONValue.object(members).encodedBytes
        bytes.append(UInt8(ascii: "\n"))
        bytes.withUnsafeBytes { _ = write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}

/// Waits for the graceful shutdown (SIGTERM/SIGINT), then ends the registry's streams.
struct RegistryShutdown: Service {
    let registry: Registry
    func run() async throws {
        try? await gracefulShutdown()
        await registry.shutdown()
    }
}
