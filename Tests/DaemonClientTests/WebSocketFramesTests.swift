import Testing
@testable import DaemonClient

/// A server frame (unmasked) as the daemon sends it.
func serverFrame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true) -> [UInt8] {
    var out: [UInt8] = [(fin ? 0x80 : 0) | opcode]
    if payload.count < 126 { out.append(UInt8(payload.count)) }
    else if payload.count <= 0xFFFF { out += [126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)] }
    else { out.append(127); for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8((payload.count >> s) & 0xFF)) } }
    return out + payload
}

@Suite struct WebSocketFramesTests {
    @Test(arguments: [0, 1, 125, 126, 127, 65535, 65536, 100_000])
    func lengthsRoundTripInPieces(_ n: Int) throws {
        let payload = (0..<n).map { UInt8($0 & 0xFF) }
        let wire = serverFrame(0x2, payload) + serverFrame(0x9, [1, 2])
        var d = WebSocketDecoder()
        var frames: [WebSocketFrame] = []
        var i = 0
        while i < wire.count {
            frames += try d.feed(wire[i..<min(wire.count, i + 777)])
            i += 777
        }
        #expect(frames == [WebSocketFrame(opcode: .binary, payload: payload), WebSocketFrame(opcode: .ping, payload: [1, 2])])
    }

    @Test func clientFramesAreMaskedAsRFC6455Says() {
        // RFC 6455 §5.7: a masked "Hello" with key 37 fa 21 3d.
        let f = WebSocketFrame(opcode: .text, payload: Array("Hello".utf8)).encoded(mask: (0x37, 0xFA, 0x21, 0x3D))
        #expect(f == [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
        let long = WebSocketFrame(opcode: .binary, payload: [UInt8](repeating: 0, count: 300)).encoded(mask: (1, 2, 3, 4))
        #expect(Array(long[0..<8]) == [0x82, 0xFE, 0x01, 0x2C, 1, 2, 3, 4])
        let huge = WebSocketFrame(opcode: .binary, payload: [UInt8](repeating: 0, count: 70000)).encoded(mask: (0, 0, 0, 0))
        #expect(Array(huge[0..<10]) == [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0x11, 0x70])
    }

    @Test(arguments: [
        [0x82, 0x81, 0, 0, 0, 0, 0x41],         // masked server frame
        [0xC2, 0x00],                             // RSV1 without an extension
        [0x83, 0x00],                             // reserved opcode
        [0x89, 0x7E, 0x00, 0x7E] + [UInt8](repeating: 0, count: 126),  // control frame > 125
        [0x09, 0x00],                             // fragmented control frame
        [0x82, 0x7F, 0xFF, 0, 0, 0, 0, 0, 0, 0], // 2^63-ish length
    ] as [[UInt8]])
    func protocolErrors(_ wire: [UInt8]) {
        var d = WebSocketDecoder()
        #expect(throws: WebSocketDecoder.Failure.self) { _ = try d.feed(wire) }
    }

    @Test func oversizedFrameIsRefusedBeforeBuffering() {
        var d = WebSocketDecoder(maxPayload: 1000)
        #expect(throws: WebSocketDecoder.Failure.self) { _ = try d.feed([0x82, 0x7E, 0x03, 0xE9]) }
    }

    @Test func base64Vectors() {
        // RFC 4648 §10.
        let cases = ["": "", "f": "Zg==", "fo": "Zm8=", "foo": "Zm9v", "foob": "Zm9vYg==", "fooba": "Zm9vYmE=", "foobar": "Zm9vYmFy"]
        for (plain, coded) in cases { #expect(base64(Array(plain.utf8)) == coded) }
    }
}
