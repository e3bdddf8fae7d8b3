import Foundation
import PackagePlugin

/// Bakes the git revision pvmm is built from into the binary (`pvmm --version`). A
/// prebuild command runs before every build, so the revision follows commits without a
/// clean; Scripts/git-revision writes "unknown" when the tree is not a git checkout.
@main
struct GitRevision: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let out = context.pluginWorkDirectoryURL.appendingPathComponent("generated")
        let root = context.package.directoryURL
        return [.prebuildCommand(
            displayName: "git revision for pvmm --version",
            executable: URL(fileURLWithPath: "/bin/sh"),
            arguments: [root.appendingPathComponent("Scripts/git-revision").path, root.path, out.path],
            outputFilesDirectory: out)]
    }
}
