import Hummingbird
import NIOCore
import NIOHTTP1
import VMControl
import VMDefinition

/// An error the API reports as `{"error": MESSAGE, "field": FIELD}` with an HTTP status.
/// Every failure reaching a client goes through this type, so the mapping from typed
/// errors (ConfigError, ControlCallError, SpawnError) to statuses lives in one place.
public struct APIError: Error, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String
    public var field: String?

    public init(_ status: HTTPResponse.Status, _ message: String, field: String? = nil) {
        self.status = status
        self.message = message
        self.field = field
    }

    public var description: String { "\(status.code) \(message)" + (field.map { " (field \($0))" } ?? "") }

    /// A user's definition is unusable: 400 naming the field.
    public static func invalid(_ e: ConfigError) -> APIError {
        APIError(.badRequest, e.message, field: e.field.isEmpty ? nil : e.field)
    }

    public static func notFound(_ name: String) -> APIError { APIError(.notFound, "no VM named '\(name)'", field: "name") }

    public static func conflict(_ message: String, field: String? = nil) -> APIError {
        APIError(.conflict, message, field: field)
    }

    public var json: JSONValue {
        .object([("error", .string(message))] + (field.map { [("field", .string($0))] } ?? []))
    }

    public var response: Response { jsonResponse(json, status: status) }
}

extension ControlCallError {
    /// The VMM's own error kinds map as docs/control.md says: invalid 400, conflict 409,
    /// host and guest 500; a VMM that cannot be reached is in no state to take commands.
    var api: APIError {
        switch self {
        case .refused(let e):
            switch e.kind {
            case .invalid: APIError(.badRequest, e.message, field: e.field)
            case .conflict: APIError(.conflict, e.message, field: e.field ?? "state")
            case .host, .guest: APIError(.internalServerError, "\(e.kind.rawValue) error: \(e.message)", field: e.field)
            }
        case .unreachable(let why): APIError(.conflict, "the VM's VMM is not reachable (\(why)); is it running?")
        case .protocolError(let why): APIError(.internalServerError, "bad answer from the VM's VMM: \(why)")
        case .timedOut: APIError(.conflict, "the VM's VMM did not answer in time")
        }
    }
}

/// Encodes a JSON value as a response with the given status.
func jsonResponse(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
    var body = value.encodedBytes
    body.append(UInt8(ascii: "\n"))
    return Response(status: status, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(bytes: body)))
}

/// Turns every error a handler (or the router's not-found path, or the body collector)
/// throws into the API's JSON error body, so no client ever sees another format.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as APIError {
            return e.response
        } catch let e as HTTPError {
            if e.status == .notFound, let allowed = API.allowedMethods(for: request.uri.path) {
                var r = APIError(.methodNotAllowed, "\(request.method) is not allowed on \(request.uri.path)", field: "method").response
                r.headers[.allow] = allowed.map(\.rawValue).joined(separator: ", ")
                return r
            }
            let fallback: String = switch e.status {
            case .notFound: "no such endpoint: \(request.method) \(request.uri.path)"
            case .contentTooLarge: "the request body is over \(APILimits.maxBody) bytes"
            default: e.status.reasonPhrase
            }
            var r = APIError(e.status, e.body ?? fallback).response
            for h in e.headers { r.headers.append(h) }
            return r
        } catch let e as HTTPParserError {
            // The body broke off or was malformed (a truncated upload, bad chunking).
            return APIError(.badRequest, "malformed request: \(e)").response
        } catch is NIOTooManyBytesError {
            return APIError(.contentTooLarge, "the request body is over \(APILimits.maxBody) bytes").response
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return APIError(.internalServerError, "\(error)").response
        }
    }
}

public enum APILimits {
    /// Request bodies larger than this are refused with 413 before they are read further.
    public static let maxBody = 1 << 20
}
