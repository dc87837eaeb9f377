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
public func mpirun(_ ranks: Int, _ arguments: [String], environment: [String: String] = [:],
                   timeout: TimeInterval = 180) throws -> ProcessResult {
    try runProcess("/usr/bin/env", ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "\(ranks)"] + arguments,
                   environment: environment, timeout: timeout)
}

/// mpirun as root, oversubscribed, with each rank's output in its own file under `directory` (`--output-filename`):
/// ranks that report at once interleave their bytes mid-line on the merged stderr. `arguments` follow the
/// launcher's options (`-n 2 binary …`, or an MPMD line `-n 1 a : -n 1 b`). Returns the run and rank 0's stderr.
public func mpirunWithRankFiles(_ arguments: [String], directory: URL,
                                timeout: TimeInterval = 180) throws -> (result: ProcessResult, rank0Stderr: String) {
    let result = try runProcess("/usr/bin/env", ["mpirun", "--allow-run-as-root", "--oversubscribe",
                                                 "--output-filename", directory.path] + arguments, timeout: timeout)
    let rank0 = directory.appendingPathComponent("1/rank.0/stderr")
    return (result, (try? String(contentsOf: rank0, encoding: .utf8)) ?? "")
}

/// The project's ssh stand-in (runs the command here, as if on the named host).
public let sshStandIn = "\(FileManager.default.currentDirectoryPath)/Tests/Cluster/ssh-standin"

/// Open MPI's environment for `count` "hosts" 127.0.0.2, 127.0.0.3, … on this machine with `slots` ranks each,
/// written to `hostfile`: mpirun reaches them through the ssh stand-in, so each is a machine of its own to Open MPI
/// (its own daemon; MPI_COMM_TYPE_SHARED splits by it), and the TCP transport runs over loopback. As in
/// Launch/simcluster.sh, no mpirun binding and no hwloc runtime component (its shared-memory topology write once
/// crashed mpirun with "remote" daemons on this one machine).
public func loopbackHosts(_ count: Int, slots: Int, hostfile: URL) throws -> [String: String] {
    try (0..<count).map { "127.0.0.\($0 + 2) slots=\(slots)\n" }.joined().write(to: hostfile, atomically: true, encoding: .utf8)
    return ["OMPI_MCA_orte_default_hostfile": hostfile.path, "OMPI_MCA_plm_rsh_agent": sshStandIn,
            "OMPI_MCA_btl": "tcp,self", "OMPI_MCA_btl_tcp_if_include": "lo", "OMPI_MCA_oob_tcp_if_include": "lo",
            "OMPI_MCA_hwloc_base_binding_policy": "none", "OMPI_MCA_rtc": "^hwloc"]
}

/// A command running in the background with its output going to files, for tests that signal it mid-run.
public final class BackgroundProcess {
    public let process = Process()
    let outURL: URL, errURL: URL

    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        let directory = try makeTemporaryDirectory("ocr-ddp-bg")
        outURL = directory.appendingPathComponent("stdout")
        errURL = directory.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        try process.run()
    }

    public var stdout: String { (try? String(contentsOf: outURL, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOf: errURL, encoding: .utf8)) ?? "" }
    public var pid: Int32 { process.processIdentifier }

    /// Polls `condition` until it holds (true) or `timeout` seconds pass (false).
    @discardableResult
    public func waitUntil(timeout: TimeInterval, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            if !process.isRunning { return condition() }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return false
    }

    public func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// The exit status, or nil when the process was still running after `timeout` seconds (it is then killed).
    public func wait(timeout: TimeInterval) -> Int32? {
        if !waitUntil(timeout: timeout, { !process.isRunning }) {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        process.waitUntilExit()
        return process.terminationStatus
    }
}

/// The pid of the process of MPI rank `rank` whose command line contains `marker` (a launcher's child: its
/// environment holds OMPI_COMM_WORLD_RANK).
public func mpiRankProcess(_ rank: Int, commandContaining marker: String) -> Int32? {
    let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
    for pid in pids {
        guard let command = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
              String(decoding: command, as: UTF8.self).replacingOccurrences(of: "\0", with: " ").contains(marker),
              let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
        if environ.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)" }) {
            return pid
        }
    }
    return nil
}
