import CFuzzer
import Foundation

/// The parser under test, reached from libFuzzer's C callback (which cannot carry a Swift closure).
nonisolated(unsafe) private var target: (([UInt8]) -> Void)?

/// A fuzz target's main: libFuzzer's driver when built by Launch/fuzz.sh (-sanitize=fuzzer), else a replay of the
/// inputs named on the command line.
public func fuzzOrReplay(_ body: @escaping ([UInt8]) -> Void) {
    target = body
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    let status = ocr_fuzz_run(&argc, &argv) { data, size in
        target?(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
        return 0
    }
    if status >= 0 { exit(status) }
    replayInputs(body)
}

/// Without libFuzzer (a normal build), a fuzz target replays inputs instead: every file named on the command line,
/// or every file inside a named directory (a corpus, or the crash inputs kept in Fuzz/Regressions). A crash shows
/// which file it was on; each one that parses or is refused prints a line.
public func replayInputs(_ body: ([UInt8]) -> Void) {
    var files: [String] = []
    for argument in CommandLine.arguments.dropFirst() {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory) else { continue }
        if isDirectory.boolValue {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: argument)) ?? []
            files += names.sorted().map { "\(argument)/\($0)" }
        } else {
            files.append(argument)
        }
    }
    for file in files {
        guard let data = FileManager.default.contents(atPath: file) else { continue }
        print("replaying \(file) (\(data.count) bytes)")
        body([UInt8](data))
    }
    print("replayed \(files.count) inputs without a crash")
}
