import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import VMControl
import VMDefinition
import CSys
import Foundation

/// A failure talking to a VMM's control socket (docs/control.md).
public enum ControlCallError: Error, Sendable, Equatable {
    /// The VMM refused the request, typed by whose fault it is (VMControl's codec).
    case refused(ControlError)
    /// No VMM listens there (not started yet, or gone).
    case unreachable(String)
    /// The answer was not one JSON line of the documented shape.
    case protocolError(String)
    case timedOut
}

/// One connection to a VMM's control socket: ONE request line, ONE response line, then
/// (for events, console and logs) a stream. Built on NIO so thousands of idle event
/// streams cost no threads.
public struct ControlConnection: Sendable {
    public typealias Channel = NIOAsyncChannel<ByteBuffer, ByteBuffer>
    /// A response line longer than this is a protocol error (a status is ~150 bytes,
    /// stats grow with devices).
    static let maxLine = 1 << 20

    /// Connects, sends `request`, reads the response line and hands `body` the answer,
    /// the bytes that followed it on the stream and the channel's two directions.
    public static func with<T: Sendable>(
        path: String, request: ControlRequest, timeout: TimeAmount = .seconds(10), streams: StreamSet? = nil,
        _ body: (JSONValue, ByteBuffer, NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator, NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws -> T
    ) async throws -> T {
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(2))
                .connect(unixDomainSocketPath: path) { ch in
                    ch.eventLoop.makeCompletedFuture { try Channel(wrappingChannelSynchronously: ch) }
                }
        } catch {
            throw ControlCallError.unreachable("\(error)")
        }
        // The answer must come within `timeout` (a wedged VMM must not hold a request
        // forever); closing the channel ends the read below.
        let fired = NIOLockedValueBox(false)
        let timer = channel.channel.eventLoop.scheduleTask(in: timeout) {
            fired.withLockedValue { $0 = true }
            channel.channel.close(promise: nil)
        }
        // A long-lived stream (console, logs -f) is closed by the daemon's shutdown.
        let streamID = streams?.add(channel.channel)
        defer { if let streamID { streams?.remove(streamID) } }
        return try await channel.executeThenClose { inbound, outbound in
            let line = request.json.line
            var it = inbound.makeAsyncIterator()
            var pending = ByteBuffer()
            let response: JSONValue
            do {
                try await outbound.write(ByteBuffer(bytes: line))
                response = try await readLine(&it, &pending)
                timer.cancel()
            } catch {
                timer.cancel()
                if fired.withLockedValue({ $0 }) { throw ControlCallError.timedOut }
                throw error
            }
            return try await body(response, pending, it, outbound)
        }
    }

    static func readLine(_ it: inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator, _ pending: inout ByteBuffer) async throws -> JSONValue {
        while true {
            if let nl = pending.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
                let bytes = pending.readBytes(length: nl - pending.readerIndex)!
                pending.moveReaderIndex(forwardBy: 1)
                return try decodeResponse(bytes)
            }
            guard pending.readableBytes < maxLine else { throw ControlCallError.protocolError("response line too long") }
            guard var chunk = try await it.next() else {
                throw ControlCallError.protocolError("connection closed before the response")
            }
            pending.writeBuffer(&chunk)
        }
    }

    /// One request, one answer; the connection is closed after it.
    public static func request(path: String, _ request: ControlRequest, timeout: TimeAmount = .seconds(10)) async throws(ControlCallError) -> JSONValue {
        do {
            return try await with(path: path, request: request, timeout: timeout) { r, _, _, _ in r }
        } catch let e as ControlCallError {
            throw e
        } catch {
            throw .unreachable("\(error)")
        }
    }

    /// One request with `files` passed along (SCM_RIGHTS; NIO cannot): a snapshot's
    /// memory and state files, which a jailed VMM cannot create itself. A blocking
    /// socket on a thread of its own, answered through the continuation.
    public static func request(path: String, _ request: ControlRequest, passing files: [Int32],
                               timeoutSeconds: Int32) async throws(ControlCallError) -> JSONValue {
        let answer: Result<[UInt8], ControlCallError> = await withCheckedContinuation { done in
            Thread.detachNewThread { done.resume(returning: Self.exchange(path: path, line: request.json.line, files: files, timeoutMs: timeoutSeconds * 1000)) }
        }
        return try decodeResponse(try answer.get())
    }

    /// Connect, send the line with the files, read one response line (blocking, bounded).
    static func exchange(path: String, line: [UInt8], files: [Int32], timeoutMs: Int32) -> Result<[UInt8], ControlCallError> {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(.unreachable("socket: \(String(cString: strerror(errno)))")) }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return .failure(.unreachable("\(path): too long")) }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in bytes.enumerated() { p[i] = b } }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { return .failure(.unreachable("\(path): \(String(cString: strerror(errno)))")) }
        let sent = line.withUnsafeBytes { b in files.withUnsafeBufferPointer { csys_send_fds(fd, b.baseAddress, UInt64(b.count), $0.baseAddress, Int32($0.count)) } }
        guard sent == line.count else { return .failure(.unreachable("\(path): the request could not be sent")) }
        var response: [UInt8] = []
        let deadline = monotonicNanoseconds() + UInt64(timeoutMs) * 1_000_000
        var buf = [UInt8](repeating: 0, count: 4096)
        while !response.contains(0x0A) {
            let now = monotonicNanoseconds()
            guard now < deadline else { return .failure(.timedOut) }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, Int32((deadline - now) / 1_000_000) + 1) > 0 else { continue }
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { return .failure(.protocolError("connection closed before the response")) }
            response += buf[0..<n]
            if response.count > maxLine { return .failure(.protocolError("response longer than \(maxLine) bytes")) }
        }
        return .success(Array(response[..<response.firstIndex(of: 0x0A)!]))
    }

    /// `{"ok":true,...}` -> the object; `{"ok":false,"error":{...}}` -> `.refused`.
    static func decodeResponse(_ bytes: [UInt8]) throws(ControlCallError) -> JSONValue {
        let v: JSONValue
        do { v = try JSONValue(parsing: bytes) } catch { throw .protocolError(error.description) }
        if v["ok"] == .bool(true) { return v }
        if let e = ControlError(response: v) { throw .refused(e) }
        throw .protocolError("neither {\"ok\":true} nor an error response")
    }
}


/// The VMM connections behind long-lived client streams: closed all at once when the
/// daemon shuts down, so SIGTERM never waits on an attached console.
public final class StreamSet: Sendable {
    private let channels = NIOLockedValueBox<(next: UInt64, open: [UInt64: any Channel], closed: Bool)>((1, [:], false))

    public init() {}

    func add(_ ch: any Channel) -> UInt64 {
        let (id, closed) = channels.withLockedValue { s -> (UInt64, Bool) in
            let id = s.next
            s.next += 1
            if !s.closed { s.open[id] = ch }
            return (id, s.closed)
        }
        if closed { ch.close(promise: nil) }
        return id
    }

    func remove(_ id: UInt64) { channels.withLockedValue { _ = $0.open.removeValue(forKey: id) } }

    public func closeAll() {
        let all = channels.withLockedValue { s -> [any Channel] in
            s.closed = true
            defer { s.open = [:] }
            return Array(s.open.values)
        }
        for ch in all { ch.close(promise: nil) }
    }
}
