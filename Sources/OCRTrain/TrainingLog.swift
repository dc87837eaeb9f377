import Foundation
import OCRDistributed

/// Logging with rank metadata: information from rank 0 only (every rank computes the same), warnings from every
/// rank, prefixed `[rank r/p]`; `record` appends a JSON object to WORK_DIR/log.jsonl and prints it.
public struct RankLog {
    public let comm: Communicator
    public let workDir: String?

    public init(comm: Communicator, workDir: String?) {
        self.comm = comm
        self.workDir = workDir
    }

    var prefix: String { comm.size > 1 ? "[rank \(comm.rank)/\(comm.size)] " : "" }

    public func info(_ message: String) {
        guard comm.isRoot else { return }
        print(prefix + message)
        fflush(stdout)
    }

    public func warning(_ message: String) {
        FileHandle.standardError.write(Data("\(prefix)warning: \(message)\n".utf8))
    }

    /// Appends one JSON line to WORK_DIR/log.jsonl (rank 0) and prints it; a failed write (a full disk) throws an
    /// error naming the file instead of trapping.
    public func record(_ object: [String: Any]) throws {
        guard comm.isRoot, let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else {
            return
        }
        let line = String(decoding: data, as: UTF8.self)
        print(line)
        fflush(stdout)
        guard let workDir else { return }
        try appendLine(line, to: "\(workDir)/log.jsonl")
    }
}

/// Appends `line` and a newline to `path` (created if missing) and fsyncs it.
func appendLine(_ line: String, to path: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    guard fd >= 0 else { throw LogError("\(path): cannot open for appending (\(String(cString: strerror(errno))))") }
    defer { close(fd) }
    let bytes = Array((line + "\n").utf8)
    var written = 0
    while written < bytes.count {
        let n = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress! + written, bytes.count - written) }
        guard n > 0 else {
            // A partial line would make the file unreadable as JSON lines: cut it back.
            let reason = String(cString: strerror(errno))
            let end = lseek(fd, 0, SEEK_END)
            if end >= written { _ = ftruncate(fd, end - off_t(written)) }
            throw LogError("\(path): write failed (\(reason))")
        }
        written += n
    }
    guard fsync(fd) == 0 else { throw LogError("\(path): write failed (\(String(cString: strerror(errno))))") }
}

public struct LogError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
