import VMDefinition

/// The control socket's protocol (docs/control.md): one JSON request line per
/// connection, one JSON response line, then for some requests a stream. Shared by the
/// VMM (which serves it) and clients (the daemon, tests), so there is one codec.

/// One request, as parsed from the client's line.
public enum ControlRequest: Sendable, Equatable {
    case status
    case pause
    case resume
    /// Ask the guest to power off; stop it after `timeoutSeconds` if it has not.
    case stop(timeoutSeconds: Int)
    case kill
    case reboot
    case stats
    case events
    /// Attach to the console: with `replay`, the ring's content first.
    case console(replay: Bool)
    /// The ring's content, then (with `follow`) live output; read-only.
    case logs(follow: Bool)
    /// Save the VM into directory `path` (docs/snapshot.md); a running VM runs on.
    case snapshot(path: String)

    /// A request line is small; a client sending more without a newline is refused.
    public static let maxLineBytes = 4096
    public static let defaultStopTimeoutSeconds = 10
    /// A day: longer is surely a unit mistake (milliseconds).
    public static let maxStopTimeoutSeconds = 86_400

    /// Parses one request (the line without its newline). Unknown ops and fields,
    /// wrong types and out-of-range values are `.invalid` errors naming the field.
    public init(line: some Collection<UInt8>) throws(ControlError) {
        let value: JSONValue
        do { value = try JSONValue(parsing: line) } catch {
            throw ControlError(.invalid, error.description)
        }
        do throws(ConfigError) {
            var r = try FieldReader(value)
            guard let op = try r.string("op") else { throw ConfigError(field: "op", message: "missing") }
            switch op {
            case "status": self = .status
            case "pause": self = .pause
            case "resume": self = .resume
            case "kill": self = .kill
            case "reboot": self = .reboot
            case "stats": self = .stats
            case "events": self = .events
            case "stop":
                let t = try r.int("timeout_s") ?? Self.defaultStopTimeoutSeconds
                guard t >= 0 && t <= Self.maxStopTimeoutSeconds else {
                    throw ConfigError(field: "timeout_s", message: "\(t) is out of range (0 to \(Self.maxStopTimeoutSeconds) seconds)")
                }
                self = .stop(timeoutSeconds: t)
            case "console": self = .console(replay: try r.bool("replay") ?? true)
            case "logs": self = .logs(follow: try r.bool("follow") ?? false)
            case "snapshot":
                guard let path = try r.string("path") else { throw ConfigError(field: "path", message: "missing") }
                guard !path.isEmpty, !path.utf8.contains(0) else { throw ConfigError(field: "path", message: "empty or contains a NUL byte") }
                self = .snapshot(path: path)
            default:
                throw ConfigError(field: "op", message: "'\(op)' is not one of: status, pause, resume, stop, kill, reboot, stats, events, console, logs, snapshot")
            }
            try r.finish()
        } catch {
            throw ControlError(.invalid, error.message, field: error.field.isEmpty ? nil : error.field)
        }
    }

    /// The request as a line (without the newline): what a client sends.
    public var json: JSONValue {
        switch self {
        case .status: .object([("op", .string("status"))])
        case .pause: .object([("op", .string("pause"))])
        case .resume: .object([("op", .string("resume"))])
        case .kill: .object([("op", .string("kill"))])
        case .reboot: .object([("op", .string("reboot"))])
        case .stats: .object([("op", .string("stats"))])
        case .events: .object([("op", .string("events"))])
        case .stop(let t): .object([("op", .string("stop")), ("timeout_s", .int(t))])
        case .console(let replay): .object([("op", .string("console")), ("replay", .bool(replay))])
        case .logs(let follow): .object([("op", .string("logs")), ("follow", .bool(follow))])
        case .snapshot(let path): .object([("op", .string("snapshot")), ("path", .string(path))])
        }
    }
}

/// A request that failed, typed by whose fault it is. The daemon maps `kind` to HTTP
/// (invalid 400, conflict 409, host and guest 500) without parsing messages.
public struct ControlError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// The request itself is wrong (bad JSON, unknown op or field, bad value).
        case invalid
        /// Not allowed in the VM's current state (pause a paused VM).
        case conflict
        /// The host or the VMM failed (a KVM ioctl, a thread, a file).
        case host
        /// The guest failed while doing it (it crashed during a reboot).
        case guest
    }

    public var kind: Kind
    public var message: String
    public var field: String?

    public init(_ kind: Kind, _ message: String, field: String? = nil) {
        self.kind = kind
        self.message = message
        self.field = field
    }

    public var description: String { field.map { "\($0): \(message)" } ?? message }

    /// `{"ok":false,"error":{"kind":...,"message":...,"field":...}}`
    public var response: JSONValue {
        var e: [(key: String, value: JSONValue)] = [("kind", .string(kind.rawValue)), ("message", .string(message))]
        if let field { e.append(("field", .string(field))) }
        return .object([("ok", .bool(false)), ("error", .object(e))])
    }

    /// Reads an error response back (clients); nil if `value` is not one.
    public init?(response value: JSONValue) {
        guard value["ok"] == .bool(false), let e = value["error"], let k = e["kind"]?.stringValue,
              let kind = Kind(rawValue: k), let m = e["message"]?.stringValue else { return nil }
        self.init(kind, m, field: e["field"]?.stringValue)
    }
}

/// `{"ok":true, members...}`
public func controlOK(_ members: [(key: String, value: JSONValue)] = []) -> JSONValue {
    .object([("ok", .bool(true))] + members)
}

extension JSONValue {
    /// The encoding plus "\n": one protocol line.
    public var line: [UInt8] { encodedBytes + [0x0A] }
}
