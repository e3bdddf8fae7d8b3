import Foundation
import Hummingbird
import HummingbirdWebSocket
import NIOCore
import VMControl
import VMDefinition

extension API {
    /// GET /v1/events: every state change as a JSON line, or as server-sent events when
    /// the client asks for text/event-stream. Runs until the client goes away.
    func events(_ request: Request) -> Response {
        let sse = request.headers[.accept]?.contains("text/event-stream") ?? false
        let registry = registry
        return Response(status: .ok, headers: [.contentType: sse ? "text/event-stream" : "application/x-ndjson",
                                               .cacheControl: "no-store"],
                        body: .init { writer in
            let stream = await registry.subscribe()
            // A first line at once: the client knows it is subscribed (and proxies flush).
            try await writer.write(ByteBuffer(string: sse ? ": subscribed\n\n" : ""))
            for await e in stream {
                if e.name.isEmpty {
                    try await writer.write(ByteBuffer(string: sse ? ": heartbeat\n\n" : "\n"))
                    continue
                }
                let line = e.json.encoded
                try await writer.write(ByteBuffer(string: sse ? "event: state\ndata: \(line)\n\n" : line + "\n"))
            }
            try await writer.finish(nil)
        })
    }

    /// GET /v1/vms/{name}/logs[?follow=true]: the console ring from the VMM while it runs,
    /// else what it saved at exit (console.log).
    func logs(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let n = try name(context)
        let follow = try boolParameter(request, "follow")
        let paths = VMPaths(stateDir: registry.stateDir, name: n)
        let headers: HTTPFields = [.contentType: "application/octet-stream", .cacheControl: "no-store"]
        if let t = try? await registry.target(n, allowed: [.starting, .running, .paused, .stopping], action: "read") {
            let control = t.control
            let streams = registry.streams
            return Response(status: .ok, headers: headers, body: .init { writer in
                do {
                    try await ControlConnection.with(path: control,
                                                     request: .logs(follow: follow),
                                                     timeout: .seconds(10), streams: streams) { _, pending, it, _ in
                        if pending.readableBytes > 0 { try await writer.write(pending) }
                        var it = it
                        while let chunk = try await it.next() { try await writer.write(chunk) }
                    }
                } catch is ControlCallError {
                    // It ended between the check and the connect: fall back to the file.
                    if let bytes = StateFiles.read(paths.consoleLog) { try await writer.write(ByteBuffer(bytes: bytes)) }
                }
                try await writer.finish(nil)
            })
        }
        _ = try await registry.info(n)
        let bytes = StateFiles.read(paths.consoleLog) ?? []
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// The WebSocket router: GET /v1/vms/{name}/console upgrades when the VM's VMM is
    /// there; the handler then joins the socket to the VMM's console stream (replay
    /// first), binary frames both ways. Closing the WebSocket detaches.
    func registerConsole(on router: Router<BasicWebSocketRequestContext>) {
        let registry = registry
        // A refused upgrade can only be an empty 400 (the WebSocket library's choice), so
        // every well-formed console path upgrades, and a VM that is missing or not running
        // is reported in the close frame: code 4000 + the HTTP status (4404, 4409), the
        // error message as the reason.
        router.ws("/v1/vms/:name/console") { _, context in
            context.parameters.get("name") == nil ? .dontUpgrade : .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            guard let n = context.requestContext.parameters.get("name") else { return }
            do {
                do { try VMConfig.validate(name: n) } catch { throw APIError.notFound(n) }
                _ = try await registry.target(n, allowed: [.starting, .running, .paused, .stopping], action: "attach to")
            } catch let e as APIError {
                try? await outbound.close(.unknown(UInt16(4000 + Int(e.status.code))), reason: e.message)
                return
            }
            let control = VMPaths(stateDir: registry.stateDir, name: n).control
            do {
                try await ControlConnection.with(path: control, request: .console(replay: true),
                                                 timeout: .seconds(10), streams: registry.streams) { _, pending, it, vmmOut in
                    let guestOutput = IteratorBox(it)
                    try await withThrowingTaskGroup(of: Void.self) { g in
                        g.addTask {
                            // Guest output -> client.
                            if pending.readableBytes > 0 { try await outbound.write(.binary(pending)) }
                            while let chunk = try await guestOutput.it.next() { try await outbound.write(.binary(chunk)) }
                        }
                        g.addTask {
                            // Client input (binary or text frames) -> guest.
                            for try await frame in inbound {
                                try await vmmOut.write(frame.data)
                            }
                        }
                        // Either side ending ends the attachment.
                        _ = try await g.next()
                        g.cancelAll()
                    }
                }
            } catch {
                context.logger.debug("console attachment ended", metadata: ["vm": "\(n)", "error": "\(error)"])
            }
            try? await outbound.close(.normalClosure, reason: nil)
        }
    }
}

/// The VMM stream's iterator, moved into the one child task that reads it (NIO's
/// iterator is not Sendable; nothing else touches it after the move).
final class IteratorBox: @unchecked Sendable {
    var it: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    init(_ it: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator) { self.it = it }
}
