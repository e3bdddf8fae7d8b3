import ArgumentParser
import DaemonClient

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print pvmm's version and the git revision it was built from.")

    func run() { print(PVMMVersion.text) }
}
