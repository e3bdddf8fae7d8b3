// libFuzzer entry for what the pvmm client parses from the daemon's socket: HTTP/1.1
// responses (HTTPResponseParser) and WebSocket frames (WebSocketDecoder). Arbitrary
// bytes, fed in two pieces split where the first byte says, yield frames, body bytes or
// a typed error: never a trap, a sanitizer report, a hang or an unbounded buffer.
// Built and run by Scripts/fuzz-client.
import DaemonClient

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzClient(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: data == nil ? 0 : size))
    guard let first = bytes.first else { return 0 }
    let rest = Array(bytes.dropFirst())
    let cut = rest.isEmpty ? 0 : Int(first) % (rest.count + 1)

    var http = HTTPResponseParser(requestWasHead: first & 0x80 != 0)
    var body: [UInt8] = []
    do {
        body += try http.feed(rest[..<cut])
        body += try http.feed(rest[cut...])
        if !http.isComplete { try http.finish() }
        // A body never holds more than was fed, and a 101 keeps the rest for the next protocol.
        precondition(body.count <= rest.count)
        _ = http.head?.header("content-length")
        _ = http.remainder
    } catch {
        _ = error.description
    }

    var ws = WebSocketDecoder(maxPayload: 4096)
    do {
        let frames = try ws.feed(rest[..<cut]) + ws.feed(rest[cut...])
        for f in frames {
            precondition(f.payload.count <= 4096)
            // What decodes re-encodes (masked) to a frame of the same length class.
            let e = f.encoded(mask: (1, 2, 3, 4))
            precondition(e.count >= f.payload.count + 6)
        }
    } catch {
        _ = error.description
    }
    return 0
}
