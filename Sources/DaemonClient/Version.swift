/// pvmm's release; the git revision comes from the build (Plugins/GitRevision). The CLI
/// (`pvmm --version`) and the daemon (`pvmmd --version`, GET /v1/version) report it.
public enum PVMMVersion {
    public static let release = "0.1.0"
    public static var revision: String { gitRevision }
    /// `pvmm 0.1.0 (git 0123456789ab)`, `(git 0123456789ab-dirty)` or `(git unknown)`.
    public static var text: String { "pvmm \(release) (git \(gitRevision))" }
}
