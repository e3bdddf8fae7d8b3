import ArgumentParser

/// pvmm's release; the git revision comes from the build (Plugins/GitRevision).
enum PVMMVersion {
    static let release = "0.1.0"
    /// `pvmm 0.1.0 (git 0123456789ab)`, `(git 0123456789ab-dirty)` or `(git unknown)`.
    static var text: String { "pvmm \(release) (git \(gitRevision))" }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print pvmm's version and the git revision it was built from.")

    func run() { print(PVMMVersion.text) }
}
