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

    public func record(_ object: [String: Any]) {
        guard comm.isRoot, let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else {
            return
        }
        let line = String(decoding: data, as: UTF8.self)
        print(line)
        fflush(stdout)
        guard let workDir else { return }
        let path = "\(workDir)/log.jsonl"
        if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
        if let handle = FileHandle(forWritingAtPath: path) {
            handle.seekToEndOfFile()
            handle.write(Data((line + "\n").utf8))
            try? handle.synchronize()
            try? handle.close()
        }
    }
}
