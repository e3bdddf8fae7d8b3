import Testing
@testable import DaemonClient

/// Feeds `bytes` in pieces of `step` bytes; returns the head, the body and whether the
/// response completed.
func parse(_ bytes: [UInt8], step: Int, head: Bool = false) throws -> (HTTPResponseParser.Head?, [UInt8], Bool) {
    var p = HTTPResponseParser(requestWasHead: head)
    var body: [UInt8] = []
    var i = 0
    while i < bytes.count {
        body += try p.feed(bytes[i..<min(bytes.count, i + step)])
        i += step
    }
    return (p.head, body, p.isComplete)
}

@Suite struct HTTPResponseParserTests {
    let chunked = Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: x\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: t\r\n\r\n".utf8)

    @Test func contentLengthInEveryFeedSize() throws {
        let r = Array("HTTP/1.1 201 Created\r\nContent-Length: 11\r\nX-A:  b \r\n\r\n{\"a\":true}\n".utf8)
        for step in 1...r.count {
            let (h, body, done) = try parse(r, step: step)
            #expect(h?.status == 201)
            #expect(h?.header("x-a") == "b")
            #expect(body == Array("{\"a\":true}\n".utf8))
            #expect(done)
        }
    }

    @Test func chunkedInEveryFeedSize() throws {
        for step in 1...chunked.count {
            let (h, body, done) = try parse(chunked, step: step)
            #expect(h?.status == 200)
            #expect(String(decoding: body, as: UTF8.self) == "hello, world")
            #expect(done)
        }
    }

    @Test func bodyUntilCloseAndTruncation() throws {
        var p = HTTPResponseParser()
        #expect(try p.feed(Array("HTTP/1.1 200 OK\r\n\r\nstream".utf8)) == Array("stream".utf8))
        #expect(!p.isComplete)
        try p.finish()
        #expect(p.isComplete)

        var q = HTTPResponseParser()
        _ = try q.feed(Array("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".utf8))
        #expect(throws: HTTPResponseParser.Failure.self) { try q.finish() }
        var e = HTTPResponseParser()
        #expect(throws: HTTPResponseParser.Failure.self) { try e.finish() }
    }

    @Test func bodylessResponses() throws {
        for text in ["HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"] {
            let (_, body, done) = try parse(Array(text.utf8), step: 1000)
            #expect(body.isEmpty && done)
        }
        let (_, body, done) = try parse(Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".utf8), step: 100, head: true)
        #expect(body.isEmpty && done)
    }

    @Test func upgradeLeavesTheRestForTheNewProtocol() throws {
        var p = HTTPResponseParser()
        _ = try p.feed(Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".utf8) + [0x82, 0x01, 0x41])
        #expect(p.head?.status == 101)
        #expect(p.isComplete)
        #expect(p.remainder == [0x82, 0x01, 0x41])
    }

    @Test(arguments: [
        "HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 abc OK\r\n\r\n", "garbage\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
    ])
    func malformedIsAnError(_ text: String) {
        var p = HTTPResponseParser()
        #expect(throws: HTTPResponseParser.Failure.self) { _ = try p.feed(Array(text.utf8)) }
    }

    @Test func limitsAreEnforced() {
        var p = HTTPResponseParser()
        let endless = Array("HTTP/1.1 200 OK\r\nX: ".utf8) + [UInt8](repeating: 0x61, count: HTTPResponseParser.maxHeadBytes + 1)
        #expect(throws: HTTPResponseParser.Failure.self) { _ = try p.feed(endless) }
        var q = HTTPResponseParser()
        let longChunk = Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".utf8) + [UInt8](repeating: 0x31, count: 2000)
        #expect(throws: HTTPResponseParser.Failure.self) { _ = try q.feed(longChunk) }
    }
}
