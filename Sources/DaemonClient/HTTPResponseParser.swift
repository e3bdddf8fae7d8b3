/// An HTTP/1.1 response read incrementally (RFC 9112): status line, headers, then a body
/// framed by Content-Length, chunked transfer coding, or the end of the connection.
/// Fed whatever bytes arrive; body bytes come out as they are decoded, so a streaming
/// endpoint (logs -f, events) is printed as it goes. Limits keep a broken peer from making
/// the client buffer without bound.
public struct HTTPResponseParser {
    public enum Failure: Error, Equatable, CustomStringConvertible {
        case malformed(String)
        public var description: String { if case .malformed(let m) = self { "bad HTTP response: \(m)" } else { "" } }
    }

    public struct Head: Equatable {
        public var status: Int
        public var headers: [(name: String, value: String)]
        public func header(_ name: String) -> String? {
            headers.first { $0.name.lowercased() == name.lowercased() }?.value
        }
        public static func == (a: Head, b: Head) -> Bool {
            a.status == b.status && a.headers.count == b.headers.count
                && zip(a.headers, b.headers).allSatisfy { $0.name == $1.name && $0.value == $1.value }
        }
    }

    enum Framing { case length(Int), chunked, untilClose, none }
    enum Phase { case head, body(Framing), chunkSize, chunkData(Int), chunkDataEnd, trailers, done }

    public static let maxHeadBytes = 64 << 10
    private var buffer: [UInt8] = []
    private var phase = Phase.head
    /// A response to HEAD, or 1xx/204/304, has no body whatever its headers say.
    private let bodyless: Bool
    public private(set) var head: Head?

    public init(requestWasHead: Bool = false) { bodyless = requestWasHead }

    public var isComplete: Bool { if case .done = phase { true } else { false } }

    /// Consumes `bytes`; returns body bytes decoded from them. After a 101 (an upgrade),
    /// the parser stops at the end of the head and `remainder` holds what followed.
    public mutating func feed(_ bytes: some Collection<UInt8>) throws(Failure) -> [UInt8] {
        buffer += bytes
        var out: [UInt8] = []
        loop: while true {
            switch phase {
            case .head:
                guard let end = find([13, 10, 13, 10]) else {
                    if buffer.count > Self.maxHeadBytes { throw .malformed("head longer than \(Self.maxHeadBytes) bytes") }
                    break loop
                }
                let h = try Self.parseHead(Array(buffer[..<end]))
                buffer.removeFirst(end + 4)
                head = h
                if h.status == 101 { phase = .done; break loop }
                if bodyless || h.status < 200 || h.status == 204 || h.status == 304 { phase = .done; break loop }
                if let te = h.header("transfer-encoding"), te.lowercased().contains("chunked") {
                    phase = .chunkSize
                } else if let cl = h.header("content-length") {
                    guard let n = Int(cl.trimmingSpaces), n >= 0 else { throw .malformed("Content-Length '\(cl)'") }
                    phase = n == 0 ? .done : .body(.length(n))
                } else {
                    phase = .body(.untilClose)
                }
            case .body(.length(let n)):
                let take = min(n, buffer.count)
                out += buffer[..<take]
                buffer.removeFirst(take)
                phase = n - take == 0 ? .done : .body(.length(n - take))
                if n - take > 0 { break loop }
            case .body:
                out += buffer
                buffer.removeAll()
                break loop
            case .chunkSize:
                guard let end = find([13, 10]) else {
                    if buffer.count > 1024 { throw .malformed("chunk size line too long") }
                    break loop
                }
                let line = String(decoding: buffer[..<end], as: UTF8.self)
                buffer.removeFirst(end + 2)
                let hex = line.split(separator: ";", maxSplits: 1).first.map { String($0).trimmingSpaces } ?? ""
                guard let size = Int(hex, radix: 16), size >= 0, !hex.isEmpty else { throw .malformed("chunk size '\(line)'") }
                phase = size == 0 ? .trailers : .chunkData(size)
            case .chunkData(let n):
                let take = min(n, buffer.count)
                out += buffer[..<take]
                buffer.removeFirst(take)
                if n - take > 0 { phase = .chunkData(n - take); break loop }
                phase = .chunkDataEnd
            case .chunkDataEnd:
                guard buffer.count >= 2 else { break loop }
                guard buffer[0] == 13, buffer[1] == 10 else { throw .malformed("chunk not followed by CRLF") }
                buffer.removeFirst(2)
                phase = .chunkSize
            case .trailers:
                guard let end = find([13, 10]) else {
                    if buffer.count > Self.maxHeadBytes { throw .malformed("trailers too long") }
                    break loop
                }
                buffer.removeFirst(end + 2)
                if end == 0 { phase = .done }
            case .done:
                break loop
            }
        }
        return out
    }

    /// Bytes after the response (after a 101: the upgraded protocol's first bytes).
    public var remainder: [UInt8] { buffer }

    /// The peer closed: complete only if the framing allowed it.
    public mutating func finish() throws(Failure) {
        switch phase {
        case .done: return
        case .body(.untilClose): phase = .done
        case .head: throw .malformed(head == nil && buffer.isEmpty ? "connection closed without a response" : "truncated head")
        default: throw .malformed("connection closed in the middle of the body")
        }
    }

    private func find(_ needle: [UInt8]) -> Int? {
        guard buffer.count >= needle.count else { return nil }
        for i in 0...(buffer.count - needle.count) where buffer[i] == needle[0] {
            if Array(buffer[i..<(i + needle.count)]) == needle { return i }
        }
        return nil
    }

    static func parseHead(_ bytes: [UInt8]) throws(Failure) -> Head {
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: false)
        guard let statusLine = lines.first else { throw .malformed("empty head") }
        let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1].count == 3, let status = Int(parts[1]) else {
            throw .malformed("status line '\(statusLine.prefix(80))'")
        }
        var headers: [(String, String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                throw .malformed("header line '\(line.prefix(80))'")
            }
            headers.append((String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingSpaces))
        }
        return Head(status: status, headers: headers)
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
