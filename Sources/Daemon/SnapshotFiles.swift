import Foundation
import Snapshot

/// The two files of a snapshot the daemon takes (docs/snapshot.md), made by the daemon
/// and passed to the VMM with the request, which writes and syncs them; renamed into
/// place only once the VMM answers, memory first, so the directory never holds a state
/// file that does not match its memory file.
final class SnapshotFiles: @unchecked Sendable {
    // @unchecked: used by one request handler at a time.
    let directory: String
    private(set) var fds: [Int32] = []
    static let names = ["memory", "state"]

    init(directory: String) throws(APIError) {
        self.directory = directory
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw APIError(.badRequest, "\(directory): \(String(cString: strerror(errno)))", field: "path")
        }
        // A state file left from an earlier snapshot must not pair with the new memory.
        unlink(directory + "/state")
        for name in Self.names {
            let fd = open(temporary(name), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                let e = errno
                discard()
                throw APIError(.badRequest, "\(temporary(name)): \(String(cString: strerror(e)))", field: "path")
            }
            fds.append(fd)
        }
    }

    deinit { fds.forEach { close($0) } }

    func temporary(_ name: String) -> String { directory + "/." + name + ".tmp" }

    func commit() throws(APIError) {
        for name in Self.names where rename(temporary(name), directory + "/" + name) != 0 {
            let e = errno
            discard()
            throw APIError(.internalServerError, "\(directory)/\(name): \(String(cString: strerror(e)))", field: "path")
        }
    }

    func discard() {
        for name in Self.names { unlink(temporary(name)) }
    }
}
