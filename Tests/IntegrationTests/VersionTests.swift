import Foundation
import Testing

/// `pvmm --version` and `pvmm version`: the release and the git revision of the build.
@Suite struct VersionTests {
    /// What Scripts/git-revision would bake in for this tree right now.
    func currentRevision() throws -> String {
        let git = try Child(["/usr/bin/git", "-C", Paths.root, "describe", "--always", "--dirty", "--abbrev=12", "--exclude=*"])
        guard try git.wait() == 0 else { return "unknown" }
        return git.text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func versionNamesTheReleaseAndTheBuildRevision() throws {
        let expected = "pvmm 0.1.0 (git \(try currentRevision()))\n"
        for args in [["--version"], ["version"]] {
            let c = try Child([Paths.pvmm] + args)
            #expect(try c.wait() == 0)
            #expect(c.text == expected, "\(args): \(c.text.debugDescription)")
        }
        if FileManager.default.fileExists(atPath: Paths.root + "/.git") { #expect(!expected.contains("unknown")) }
    }

    /// The generator outside a git checkout (a tarball, or inside an unrelated repository):
    /// "unknown", and an unchanged revision leaves the file alone (nothing recompiles).
    @Test func revisionScriptOutsideGitSaysUnknownAndRewritesOnlyOnChange() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvmm-rev-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/src", withIntermediateDirectories: true)
        let script = Paths.root + "/Scripts/git-revision"
        #expect(try Child(["/bin/sh", script, dir + "/src", dir + "/out"]).wait() == 0)
        let file = dir + "/out/GitRevision.swift"
        #expect(try String(contentsOfFile: file, encoding: .utf8).contains("let gitRevision = \"unknown\""))
        // Inside someone else's repository it still is not that repository's revision.
        #expect(try Child(["/usr/bin/git", "init", "-q", dir]).wait() == 0)
        let before = try FileManager.default.attributesOfItem(atPath: file)[.modificationDate] as? Date
        usleep(20_000)
        #expect(try Child(["/bin/sh", script, dir + "/src", dir + "/out"]).wait() == 0)
        #expect(try String(contentsOfFile: file, encoding: .utf8).contains("\"unknown\""))
        #expect(try FileManager.default.attributesOfItem(atPath: file)[.modificationDate] as? Date == before)
        // This tree: its own revision.
        #expect(try Child(["/bin/sh", script, Paths.root, dir + "/mine"]).wait() == 0)
        #expect(try String(contentsOfFile: dir + "/mine/GitRevision.swift", encoding: .utf8).contains("\"\(try currentRevision())\""))
    }
}
