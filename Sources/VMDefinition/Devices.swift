/// One virtio-blk disk backed by a raw image file (or block device).
public struct DiskConfig: Sendable, Equatable {
    public var path: String
    public var readOnly: Bool
    /// The serial the guest reads with VIRTIO_BLK_T_GET_ID (at most 20 bytes); also names
    /// the device in log lines. Nil: no serial, logs say `blk<i>`.
    public var id: String?

    public init(path: String, readOnly: Bool = false, id: String? = nil) {
        self.path = path
        self.readOnly = readOnly
        self.id = id
    }

    public static let maxIDBytes = 20

    /// Parses the `--disk` syntax: `PATH[,readonly][,id=NAME]`.
    public init(argument: String) throws(ConfigError) {
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let path = parts.first, !path.isEmpty else {
            throw ConfigError(field: "disks", message: "'\(argument)': expected PATH[,readonly][,id=NAME]")
        }
        var readOnly = false
        var id: String?
        for option in parts.dropFirst() {
            if option == "readonly" || option == "ro" {
                readOnly = true
            } else if option.hasPrefix("id=") {
                id = String(option.dropFirst(3))
            } else {
                throw ConfigError(field: "disks", message: "'\(option)' in '\(argument)' is not an option (expected readonly or id=NAME)")
            }
        }
        self.init(path: path, readOnly: readOnly, id: id)
        try validate(field: "disks")
    }

    init(json: JSONValue, path: String) throws(ConfigError) {
        var r = try FieldReader(json, path: path)
        let p = try r.required("path") { (r, k) throws(ConfigError) in try r.string(k) }
        let ro = try r.bool("readonly") ?? false
        let id = try r.string("id")
        try r.finish()
        self.init(path: p, readOnly: ro, id: id)
    }

    public var json: JSONValue {
        .object([("path", .string(path)), ("readonly", .bool(readOnly))] + (id.map { [("id", .string($0))] } ?? []))
    }

    /// Syntax-level checks (the file itself is checked when the VM opens it).
    public func validate(field: String) throws(ConfigError) {
        if path.isEmpty { throw ConfigError(field: field + ".path", message: "empty path") }
        if path.utf8.contains(0) { throw ConfigError(field: field + ".path", message: "path contains a NUL byte") }
        if let id {
            guard !id.isEmpty, id.utf8.count <= Self.maxIDBytes,
                  id.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ",") }) else {
                throw ConfigError(field: field + ".id", message: "'\(id)': 1 to \(Self.maxIDBytes) printable ASCII characters, no spaces or commas")
            }
        }
    }
}

/// An Ethernet address (IEEE 802), written `52:54:00:12:34:56`.
public struct MACAddress: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)

    public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8, _ b4: UInt8, _ b5: UInt8) {
        bytes = (b0, b1, b2, b3, b4, b5)
    }

    public var array: [UInt8] { [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5] }

    /// Six two-digit hex octets separated by ':' (or '-'); a multicast address (low bit
    /// of the first octet) cannot be a NIC's own, so it is refused.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let octets = parts.count == 6 ? parts : text.split(separator: "-", omittingEmptySubsequences: false)
        guard octets.count == 6 else { return nil }
        var b: [UInt8] = []
        for o in octets {
            guard o.utf8.count == 2, let v = UInt8(o, radix: 16) else { return nil }
            b.append(v)
        }
        guard b[0] & 1 == 0 else { return nil }
        self.init(b[0], b[1], b[2], b[3], b[4], b[5])
    }

    public var description: String {
        array.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }

    public static func == (a: MACAddress, b: MACAddress) -> Bool { a.array == b.array }
    public func hash(into h: inout Hasher) { h.combine(array) }
}

/// Where a virtio-net device's frames go on the host.
public enum NetBackend: Sendable, Equatable {
    /// A tap interface by name: attached if it exists, created when the caller may.
    case tap(String)
    /// An already-open tap fd, inherited from the parent (how the daemon hands one in).
    case fd(Int32)
    /// passt (user-mode networking) over its Unix stream socket; nil: pvmm starts it.
    case passt(socket: String?)
}

/// One virtio-net device.
public struct NetConfig: Sendable, Equatable {
    public var backend: NetBackend
    /// The guest's MAC; nil: pvmm picks a locally administered one.
    public var mac: MACAddress?

    public init(backend: NetBackend, mac: MACAddress? = nil) {
        self.backend = backend
        self.mac = mac
    }

    /// Linux's IFNAMSIZ less the NUL.
    public static let maxTapNameBytes = 15

    /// Parses the `--net` syntax: `tap=NAME[,mac=MAC]`, `fd=N[,mac=MAC]` or
    /// `passt[=SOCKET][,mac=MAC]`.
    public init(argument: String) throws(ConfigError) {
        let usage = "expected tap=NAME, fd=N or passt[=SOCKET], then optionally ,mac=MAC"
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let first = parts.first, !first.isEmpty else {
            throw ConfigError(field: "nets", message: "'\(argument)': \(usage)")
        }
        let backend: NetBackend
        if first.hasPrefix("tap=") {
            backend = .tap(String(first.dropFirst(4)))
        } else if first.hasPrefix("fd=") {
            guard let n = Int32(first.dropFirst(3)) else {
                throw ConfigError(field: "nets", message: "'\(first)': the fd must be a number")
            }
            backend = .fd(n)
        } else if first == "passt" {
            backend = .passt(socket: nil)
        } else if first.hasPrefix("passt=") {
            backend = .passt(socket: String(first.dropFirst(6)))
        } else {
            throw ConfigError(field: "nets", message: "'\(argument)': \(usage)")
        }
        var mac: MACAddress?
        for option in parts.dropFirst() {
            guard option.hasPrefix("mac=") else {
                throw ConfigError(field: "nets", message: "'\(option)' in '\(argument)' is not an option (expected mac=MAC)")
            }
            guard let m = MACAddress(String(option.dropFirst(4))) else {
                throw ConfigError(field: "nets", message: "'\(option.dropFirst(4))' is not a unicast MAC address like 52:54:00:12:34:56")
            }
            mac = m
        }
        self.init(backend: backend, mac: mac)
        try validate(field: "nets")
    }

    init(json: JSONValue, path: String) throws(ConfigError) {
        var r = try FieldReader(json, path: path)
        var backends: [NetBackend] = []
        if let t = try r.string("tap") { backends.append(.tap(t)) }
        if let v = r.value("fd") {
            guard case .number(let text) = v, let n = Int32(text) else {
                throw ConfigError(field: r.fieldPath("fd"), message: "expected a file descriptor number, got \(v.kindName == "a number" ? text(v) : v.kindName)")
            }
            backends.append(.fd(n))
        }
        if let v = r.value("passt") {
            switch v {
            case .bool(true): backends.append(.passt(socket: nil))
            case .string(let s): backends.append(.passt(socket: s))
            default: throw ConfigError(field: r.fieldPath("passt"), message: "expected true or a socket path, got \(v.kindName)")
            }
        }
        var mac: MACAddress?
        if let m = try r.string("mac") {
            guard let a = MACAddress(m) else {
                throw ConfigError(field: r.fieldPath("mac"), message: "'\(m)' is not a unicast MAC address like 52:54:00:12:34:56")
            }
            mac = a
        }
        try r.finish()
        guard backends.count == 1 else {
            throw ConfigError(field: path, message: backends.isEmpty ? "needs one of tap, fd or passt" : "give only one of tap, fd or passt")
        }
        self.init(backend: backends[0], mac: mac)
    }

    public var json: JSONValue {
        var m: [(key: String, value: JSONValue)]
        switch backend {
        case .tap(let name): m = [("tap", .string(name))]
        case .fd(let fd): m = [("fd", .int(fd))]
        case .passt(let socket): m = [("passt", socket.map { .string($0) } ?? .bool(true))]
        }
        if let mac { m.append(("mac", .string(mac.description))) }
        return .object(m)
    }

    public func validate(field: String) throws(ConfigError) {
        switch backend {
        case .tap(let name):
            let b = Array(name.utf8)
            guard !b.isEmpty, b.count <= Self.maxTapNameBytes, name != ".", name != "..",
                  b.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: ":") }) else {
                throw ConfigError(field: field + ".tap", message: "'\(name)' is not an interface name (1 to \(Self.maxTapNameBytes) printable characters, no '/', ':' or spaces)")
            }
        case .fd(let fd):
            if fd < 0 { throw ConfigError(field: field + ".fd", message: "\(fd) is not a file descriptor") }
        case .passt(let socket):
            if let socket, socket.isEmpty || socket.utf8.contains(0) {
                throw ConfigError(field: field + ".passt", message: "empty socket path or a NUL byte in it")
            }
        }
    }
}

private func text(_ v: JSONValue) -> String { if case .number(let t) = v { t } else { v.kindName } }
