/// A field of a user's definition that is unusable: `field` is its JSON path
/// (`memory_mib`, `disks[1].path`), `message` says what is wrong with it.
///
/// The same error reaches users through the API (`{"error": ..., "field": ...}`), a
/// config file, and `pvmm run` flags; `flag` spells the field the way the CLI does.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var field: String
    public var message: String

    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { field.isEmpty ? message : "\(field): \(message)" }

    /// The `pvmm run` flag that sets `field` (`disks[0].path` -> `--disk`).
    public var flag: String {
        let top = field.prefix { $0 != "[" && $0 != "." }
        let name: Substring = switch top {
        case "memory_mib": "memory"
        case "disks": "disk"
        case "nets": "net"
        default: top
        }
        return "--" + name.replacingUnderscores
    }

    /// The message as `pvmm run` prints it when the user gave flags.
    public var flagDescription: String { field.isEmpty ? message : "\(flag): \(message)" }
}

extension Substring {
    var replacingUnderscores: String { String(map { $0 == "_" ? "-" : $0 }) }
}

/// Reads the members of one JSON object into typed fields, tracking the path for error
/// messages and refusing members nobody asked for (a typo must not be ignored).
public struct FieldReader {
    public let path: String
    let members: [(key: String, value: JSONValue)]
    var used: Set<String> = []

    public init(_ value: JSONValue, path: String = "") throws(ConfigError) {
        guard case .object(let m) = value else {
            throw ConfigError(field: path, message: "expected an object, got \(value.kindName)")
        }
        self.path = path
        members = m
    }

    public func fieldPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The member `key`, or nil when absent or null (optional fields accept both).
    public mutating func value(_ key: String) -> JSONValue? {
        used.insert(key)
        guard let v = members.first(where: { $0.key == key })?.value, v != .null else { return nil }
        return v
    }

    public mutating func string(_ key: String) throws(ConfigError) -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v.stringValue else { throw mismatch(key, "a string", v) }
        return s
    }

    public mutating func bool(_ key: String) throws(ConfigError) -> Bool? {
        guard let v = value(key) else { return nil }
        guard let b = v.boolValue else { throw mismatch(key, "true or false", v) }
        return b
    }

    public mutating func int(_ key: String) throws(ConfigError) -> Int? {
        guard let v = value(key) else { return nil }
        guard case .number(let text) = v else { throw mismatch(key, "an integer", v) }
        guard let n = Int(text) else {
            throw ConfigError(field: fieldPath(key), message: "\(text) is not an integer in range")
        }
        return n
    }

    public mutating func array(_ key: String) throws(ConfigError) -> [JSONValue]? {
        guard let v = value(key) else { return nil }
        guard case .array(let items) = v else { throw mismatch(key, "an array", v) }
        return items
    }

    public mutating func required<T>(_ key: String, _ read: (inout FieldReader, String) throws(ConfigError) -> T?) throws(ConfigError) -> T {
        guard let v = try read(&self, key) else { throw ConfigError(field: fieldPath(key), message: "is required") }
        return v
    }

    /// Call after reading every known field: the first unknown member is an error.
    public func finish() throws(ConfigError) {
        if let extra = members.first(where: { !used.contains($0.key) }) {
            throw ConfigError(field: fieldPath(extra.key), message: "unknown field")
        }
    }

    func mismatch(_ key: String, _ expected: String, _ got: JSONValue) -> ConfigError {
        ConfigError(field: fieldPath(key), message: "expected \(expected), got \(got.kindName)")
    }
}
