/// WebSocket framing (RFC 6455 §5), the client's side: frames it sends are masked
/// (§5.3), frames it receives must not be. Decoding is incremental and bounded.
public enum WebSocketOpcode: UInt8, Sendable {
    case continuation = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA
}

public struct WebSocketFrame: Equatable, Sendable {
    public var fin: Bool
    public var opcode: WebSocketOpcode
    public var payload: [UInt8]

    public init(fin: Bool = true, opcode: WebSocketOpcode, payload: [UInt8]) {
        self.fin = fin
        self.opcode = opcode
        self.payload = payload
    }

    /// The frame as a client sends it, masked with `mask` (§5.3: a fresh random key).
    public func encoded(mask: (UInt8, UInt8, UInt8, UInt8)) -> [UInt8] {
        var out: [UInt8] = [(fin ? 0x80 : 0) | opcode.rawValue]
        let n = payload.count
        if n < 126 {
            out.append(0x80 | UInt8(n))
        } else if n <= 0xFFFF {
            out += [0x80 | 126, UInt8(n >> 8), UInt8(n & 0xFF)]
        } else {
            out.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((UInt64(n) >> UInt64(shift)) & 0xFF)) }
        }
        let m = [mask.0, mask.1, mask.2, mask.3]
        out += m
        for (i, b) in payload.enumerated() { out.append(b ^ m[i & 3]) }
        return out
    }
}

public struct WebSocketDecoder {
    public enum Failure: Error, Equatable, CustomStringConvertible {
        case protocolError(String)
        public var description: String { if case .protocolError(let m) = self { "WebSocket protocol error: \(m)" } else { "" } }
    }

    /// The daemon sends at most 1 MiB per frame; anything larger is refused, not buffered.
    public let maxPayload: Int
    private var buffer: [UInt8] = []

    public init(maxPayload: Int = 1 << 20) { self.maxPayload = maxPayload }

    /// Appends bytes; returns every complete frame they finish.
    public mutating func feed(_ bytes: some Collection<UInt8>) throws(Failure) -> [WebSocketFrame] {
        buffer += bytes
        var frames: [WebSocketFrame] = []
        var off = 0
        while true {
            let avail = buffer.count - off
            guard avail >= 2 else { break }
            let b0 = buffer[off], b1 = buffer[off + 1]
            if b0 & 0x70 != 0 { throw .protocolError("reserved bits set (no extension was negotiated)") }
            guard let opcode = WebSocketOpcode(rawValue: b0 & 0x0F) else {
                throw .protocolError("unknown opcode \(b0 & 0x0F)")
            }
            if b1 & 0x80 != 0 { throw .protocolError("a server frame is masked") }
            var len = Int(b1 & 0x7F)
            var headerLen = 2
            if len == 126 {
                guard avail >= 4 else { break }
                len = Int(buffer[off + 2]) << 8 | Int(buffer[off + 3])
                headerLen = 4
            } else if len == 127 {
                guard avail >= 10 else { break }
                var v: UInt64 = 0
                for i in 0..<8 { v = v << 8 | UInt64(buffer[off + 2 + i]) }
                guard v <= UInt64(maxPayload) else { throw .protocolError("frame of \(v) bytes is over \(maxPayload)") }
                len = Int(v)
                headerLen = 10
            }
            guard len <= maxPayload else { throw .protocolError("frame of \(len) bytes is over \(maxPayload)") }
            if opcode.rawValue >= 0x8 && (len > 125 || b0 & 0x80 == 0) {
                throw .protocolError("control frame longer than 125 bytes or fragmented")
            }
            guard avail >= headerLen + len else { break }
            let start = off + headerLen
            frames.append(WebSocketFrame(fin: b0 & 0x80 != 0, opcode: opcode, payload: Array(buffer[start..<(start + len)])))
            off = start + len
        }
        if off > 0 { buffer.removeFirst(off) }
        return frames
    }
}

/// Base64 (RFC 4648 §4), for the handshake's Sec-WebSocket-Key.
public func base64(_ bytes: [UInt8]) -> String {
    let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    var out: [UInt8] = []
    var i = 0
    while i < bytes.count {
        let n = min(3, bytes.count - i)
        let b = (UInt32(bytes[i]) << 16) | (n > 1 ? UInt32(bytes[i + 1]) << 8 : 0) | (n > 2 ? UInt32(bytes[i + 2]) : 0)
        out.append(table[Int((b >> 18) & 63)])
        out.append(table[Int((b >> 12) & 63)])
        out.append(n > 1 ? table[Int((b >> 6) & 63)] : UInt8(ascii: "="))
        out.append(n > 2 ? table[Int(b & 63)] : UInt8(ascii: "="))
        i += 3
    }
    return String(decoding: out, as: UTF8.self)
}
