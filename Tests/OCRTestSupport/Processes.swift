import Foundation

/// The built `ocr-ddp` executable next to the test bundle (both live in .build/<config>/).
public enum OCRDDPBinary {
    public static var path: String {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("ocr-ddp").path
        if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        return Fixtures.directory.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build/release/ocr-ddp").path
    }
}

public struct ProcessResult {
    public let status: Int32
    public let stdout: String
    public let stderr: String
    public let timedOut: Bool
}

/// Runs a command to completion (killing it after `timeout` seconds) and captures its output.
public func runProcess(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                       timeout: TimeInterval = 180) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    process.environment = env
    let outPipe = Pipe(), errPipe = Pipe()
    process.standardOutput = outPipe
    process.standardError = errPipe
    // Both pipes are drained on their own threads so a chatty child never blocks on a full pipe.
    final class Sink: @unchecked Sendable { var data = Data() }
    let (outSink, errSink) = (Sink(), Sink())
    let group = DispatchGroup()
    group.enter(); group.enter()
    DispatchQueue.global().async { outSink.data = outPipe.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    DispatchQueue.global().async { errSink.data = errPipe.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    var timedOut = false
    while process.isRunning {
        if Date() > deadline {
            timedOut = true
            process.terminate()
            Thread.sleep(forTimeInterval: 2)
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            break
        }
        Thread.sleep(forTimeInterval: 0.05)
    }
    process.waitUntilExit()
    group.wait()
    return ProcessResult(status: process.terminationStatus, stdout: String(decoding: outSink.data, as: UTF8.self),
                         stderr: String(decoding: errSink.data, as: UTF8.self), timedOut: timedOut)
}

/// `mpirun -n ranks` as root on an oversubscribed 2-core machine (what CI is).
public func mpirun(_ ranks: Int, _ arguments: [String], timeout: TimeInterval = 180) throws -> ProcessResult {
    try runProcess("/usr/bin/env", ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "\(ranks)"] + arguments,
                   timeout: timeout)
}
