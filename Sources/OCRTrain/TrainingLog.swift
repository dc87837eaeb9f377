import Foundation
import Logging
import OCRDistributed

/// What a training run reports: lines for people through swift-log (`Logger.rank`: rank 0's information, every
/// rank's warnings with its rank), and for tools, from rank 0, one JSON object per log interval and per evaluation
/// appended to WORK_DIR/log.jsonl and the same numbers as TensorBoard scalars under WORK_DIR/tensorboard/.
public final class TrainingLog {
    public let logger: Logger
    public let comm: Communicator
    public let workDir: String?
    /// Opened at the first scalars: the work directory exists by then.
    private var tensorBoard: TensorBoardWriter?

    public init(comm: Communicator, workDir: String?) {
        logger = Logger.rank(comm, label: "ocr-ddp.train")
        self.comm = comm
        self.workDir = workDir
    }

    public func info(_ message: String) { logger.info("\(message)") }

    public func warning(_ message: String) { logger.warning("\(message)") }

    /// Appends one JSON line to WORK_DIR/log.jsonl (rank 0); a failed write (a full disk) throws an error naming
    /// the file instead of trapping.
    public func record(_ object: [String: Any]) throws {
        guard comm.isRoot, let workDir,
              let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        try appendLine(String(decoding: data, as: UTF8.self), to: "\(workDir)/log.jsonl")
    }

    /// TensorBoard scalars at `step` (rank 0), e.g. ("train/loss", 0.53).
    public func scalars(step: Int, _ values: [(String, Double)]) throws {
        guard comm.isRoot, let workDir else { return }
        if tensorBoard == nil { tensorBoard = try TensorBoardWriter(directory: "\(workDir)/tensorboard") }
        try tensorBoard!.add(step: step, scalars: values)
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
