import DaemonClient
import Foundation
import Hummingbird
import NIOCore
import VMControl
import VMDefinition

/// The API's endpoints (docs/api.md, Sources/Daemon/openapi.json). Handlers validate,
/// ask the Registry, talk to the VMM outside the registry's actor, and answer JSON.
struct API: Sendable {
    let registry: Registry
    let taps: TapOpener

    /// Every path and the methods it takes: the router's table, and the source of 405s.
    static let routes: [(path: String, methods: [HTTPRequest.Method])] = [
        ("/v1/ping", [.get]), ("/v1/version", [.get]), ("/v1/openapi.json", [.get]), ("/v1/events", [.get]),
        ("/metrics", [.get]),
        ("/v1/vms", [.get, .post]), ("/v1/vms/:name", [.get, .delete]),
        ("/v1/vms/:name/start", [.post]), ("/v1/vms/:name/pause", [.post]), ("/v1/vms/:name/resume", [.post]),
        ("/v1/vms/:name/stop", [.post]), ("/v1/vms/:name/kill", [.post]), ("/v1/vms/:name/reboot", [.post]),
        ("/v1/vms/:name/snapshot", [.post]),
        ("/v1/vms/:name/console", [.get]), ("/v1/vms/:name/logs", [.get]), ("/v1/vms/:name/metrics", [.get]),
    ]

    static func allowedMethods(for path: String) -> [HTTPRequest.Method]? {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        for r in routes {
            let pattern = r.path.split(separator: "/", omittingEmptySubsequences: false)
            if pattern.count == segments.count,
               zip(pattern, segments).allSatisfy({ $0.hasPrefix(":") ? !$1.isEmpty : $0 == $1 }) {
                return r.methods
            }
        }
        return nil
    }

    func register(on router: Router<BasicRequestContext>) {
        router.get("/v1/ping") { _, _ in jsonResponse(.object([("ok", .bool(true))])) }
        router.get("/v1/version") { _, _ in
            jsonResponse(.object([("version", .string(PVMMVersion.release)), ("revision", .string(PVMMVersion.revision)),
                                  ("api", .string("v1"))]))
        }
        router.get("/v1/openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"],
                     body: .init(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.bytes)))
        }
        router.get("/v1/vms") { _, _ in jsonResponse(await registry.list()) }
        router.post("/v1/vms") { request, context in
            let body = try await request.body.collect(upTo: APILimits.maxBody)
            let created = try await registry.create(Array(buffer: body))
            return jsonResponse(created, status: .created)
        }
        router.get("/v1/vms/:name") { _, context in try await jsonResponse(registry.info(name(context))) }
        router.delete("/v1/vms/:name") { _, context in
            try await registry.delete(name(context))
            return Response(status: .noContent)
        }
        router.post("/v1/vms/:name/start") { request, context in
            let n = try name(context)
            let wait = try WaitOptions(request)
            try await registry.startVM(n, taps: taps)
            return try await answer(n, wait: wait, until: [.running, .paused, .stopped, .crashed])
        }
        router.post("/v1/vms/:name/pause") { request, context in
            try await command(request, context, op: .pause, allowed: [.running], action: "pause", until: [.paused])
        }
        router.post("/v1/vms/:name/resume") { request, context in
            try await command(request, context, op: .resume, allowed: [.paused], action: "resume", until: [.running])
        }
        router.post("/v1/vms/:name/reboot") { request, context in
            try await command(request, context, op: .reboot, allowed: [.running, .paused], action: "reboot", until: [.running])
        }
        router.post("/v1/vms/:name/snapshot") { request, context in
            let n = try name(context)
            let body = try await request.body.collect(upTo: APILimits.maxBody)
            guard let value = try? JSONValue(parsing: Array(buffer: body)), case .object(let members) = value else {
                throw APIError(.badRequest, "the body must be a JSON object {\"path\": DIR}", field: "path")
            }
            for m in members where m.key != "path" { throw APIError(.badRequest, "unknown member", field: m.key) }
            guard let path = value["path"]?.stringValue, path.hasPrefix("/") else {
                throw APIError(.badRequest, "an absolute directory path", field: "path")
            }
            let t = try await registry.target(n, allowed: [.running, .paused], action: "snapshot")
            // The daemon makes the files and passes them: a jailed VMM reaches no host path.
            let files = try SnapshotFiles(directory: path)
            let r: JSONValue
            do { r = try await ControlConnection.request(path: t.control, .snapshot(path: path), passing: files.fds, timeoutSeconds: 120) }
            catch let e as ControlCallError { files.discard(); throw e.api }
            try files.commit()
            guard case .object(let m) = r else { throw APIError(.internalServerError, "bad snapshot answer") }
            return jsonResponse(.object([("name", .string(n))] + m.filter { $0.key != "ok" }))
        }
        router.post("/v1/vms/:name/stop") { request, context in
            let stopTimeout = try intParameter(request, "timeout_s", default: 10, range: 0...3600)
            return try await command(request, context, op: .stop(timeoutSeconds: stopTimeout),
                                     allowed: [.running, .paused, .starting], action: "stop", until: [.stopped, .crashed],
                                     defaultWait: Double(stopTimeout) + 10)
        }
        router.post("/v1/vms/:name/kill") { request, context in
            let n = try name(context)
            let wait = try WaitOptions(request)
            let t = try await registry.target(n, allowed: [.starting, .running, .paused, .stopping], action: "kill")
            do {
                _ = try await ControlConnection.request(path: t.control, .kill, timeout: .seconds(2))
            } catch {
                // A VMM that does not answer is killed from outside; its end is recorded
                // the same way (killed by signal 9).
                try await registry.forceKill(n)
            }
            return try await answer(n, wait: wait, until: [.stopped, .crashed])
        }
        router.get("/v1/vms/:name/metrics") { _, context in
            let n = try name(context)
            let t = try await registry.target(n, allowed: [.running, .paused, .stopping, .starting], action: "read metrics of")
            let stats: JSONValue
            do { stats = try await ControlConnection.request(path: t.control, .stats) } catch let e as ControlCallError {
                throw e.api
            }
            guard case .object(let m) = stats else { throw APIError(.internalServerError, "bad stats") }
            return jsonResponse(.object([("name", .string(n))] + m.filter { $0.key != "ok" }))
        }
        router.get("/metrics") { _, _ in
            let text = await Metrics.prometheus(registry)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        router.get("/v1/events") { request, _ in events(request) }
        router.get("/v1/vms/:name/logs") { request, context in try await logs(request, context) }
        router.get("/v1/vms/:name/console") { _, context -> Response in
            // Reached only when the WebSocket router declined the upgrade.
            let n = try name(context)
            _ = try await registry.target(n, allowed: [.starting, .running, .paused, .stopping], action: "attach to")
            throw APIError(.upgradeRequired, "the console is a WebSocket: send Connection: Upgrade and Upgrade: websocket", field: "upgrade")
        }
        // Known paths with another method: 405 with Allow, in the error middleware.
    }

    func name(_ context: BasicRequestContext) throws(APIError) -> String {
        guard let n = context.parameters.get("name") else { throw APIError(.notFound, "no VM name in the path") }
        do { try VMConfig.validate(name: n) } catch { throw APIError(.notFound, "no VM named '\(n)' (\(error.message))", field: "name") }
        return n
    }

    /// A lifecycle command: check the state, send `op`, then answer (after waiting).
    func command(_ request: Request, _ context: BasicRequestContext, op: ControlRequest,
                 allowed: Set<VMState>, action: String, until: Set<VMState>, defaultWait: Double = 30) async throws -> Response {
        let n = try name(context)
        let wait = try WaitOptions(request, defaultTimeout: defaultWait)
        let t = try await registry.target(n, allowed: allowed, action: action)
        let answer: JSONValue
        do {
            answer = try await ControlConnection.request(path: t.control, op,
                                                         timeout: .seconds(Int64(max(wait.timeout, 10))))
        } catch { throw error.api }
        await registry.observeAnswer(n, target: t, answer: answer)
        return try await self.answer(n, wait: wait, until: until)
    }

    /// 200 with the VM once it reached `until` (or at once without ?wait=true);
    /// 202 with the VM when the wait timed out and the transition goes on.
    func answer(_ name: String, wait: WaitOptions, until: Set<VMState>) async throws -> Response {
        var reached = true
        if wait.wait { reached = await registry.wait(name, for: until, timeout: .milliseconds(Int64(wait.timeout * 1000))) }
        let info = try await registry.info(name)
        return jsonResponse(info, status: reached ? .ok : .accepted)
    }
}

/// `?wait=true&timeout=SECONDS`.
struct WaitOptions {
    var wait: Bool
    var timeout: Double

    init(_ request: Request, defaultTimeout: Double = 30) throws(APIError) {
        wait = try boolParameter(request, "wait")
        timeout = defaultTimeout
        if let t = request.uri.queryParameters.get("timeout") {
            guard let v = Double(t), v >= 0, v <= 3600 else {
                throw APIError(.badRequest, "'\(t)' is not a number of seconds from 0 to 3600", field: "timeout")
            }
            timeout = v
        }
    }
}

func boolParameter(_ request: Request, _ key: String) throws(APIError) -> Bool {
    guard let v = request.uri.queryParameters.get(key) else { return false }
    switch v {
    case "true", "1", "": return true
    case "false", "0": return false
    default: throw APIError(.badRequest, "'\(v)' is not true or false", field: key)
    }
}

func intParameter(_ request: Request, _ key: String, default d: Int, range: ClosedRange<Int>) throws(APIError) -> Int {
    guard let v = request.uri.queryParameters.get(key) else { return d }
    guard let n = Int(v), range.contains(n) else {
        throw APIError(.badRequest, "'\(v)' is not an integer from \(range.lowerBound) to \(range.upperBound)", field: key)
    }
    return n
}

/// The OpenAPI 3.1 document, kept in the repository (Sources/Daemon/openapi.json) and
/// served as is.
enum OpenAPIDocument {
    static let bytes: [UInt8] = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json"),
              let data = try? Data(contentsOf: url) else { return Array("{}".utf8) }
        return [UInt8](data)
    }()
}
