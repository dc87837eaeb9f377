import Foundation
import Logging
import OCRDistributed

/// The swift-log handler of ocr-ddp's console. Information goes to stdout as plain lines; warnings and errors to
/// stderr as "warning: …" / "error: …", under several ranks prefixed "[rank r/p] " from the logger's "rank" and
/// "ranks" metadata. Which ranks speak is the logger's level (`Logger.rank`): rank 0 logs information, every rank
/// its warnings.
public struct ConsoleLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info

    public init(label: String) {}

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let (level, message) = (event.level, event.message)
        guard level >= .warning else {
            print(message.description)
            fflush(stdout)
            return
        }
        var prefix = ""
        if case .string(let rank)? = self.metadata["rank"], case .string(let ranks)? = self.metadata["ranks"], ranks != "1" {
            prefix = "[rank \(rank)/\(ranks)] "
        }
        let kind = level >= .error ? "error" : "warning"
        FileHandle.standardError.write(Data("\(prefix)\(kind): \(message)\n".utf8))
    }
}

extension Logger {
    /// A logger for one rank of `comm`: information from rank 0 only (every rank computes the same), warnings from
    /// every rank, each carrying its rank.
    public static func rank(_ comm: Communicator, label: String = "ocr-ddp") -> Logger {
        var logger = Logger(label: label)
        logger[metadataKey: "rank"] = "\(comm.rank)"
        logger[metadataKey: "ranks"] = "\(comm.size)"
        logger.logLevel = comm.isRoot ? .info : .warning
        return logger
    }
}

/// How numbers read on the console, as mmengine's logger prints them.
public enum ConsoleFormat {
    /// Seconds as Python's `str(timedelta)`: "0:05:12", "1 day, 3:04:05", "2 days, 0:00:00".
    public static func duration(_ seconds: Double) -> String {
        let total = Int(max(0, seconds.isFinite ? seconds : 0).rounded(.down))
        let (days, rest) = total.quotientAndRemainder(dividingBy: 86_400)
        let clock = String(format: "%d:%02d:%02d", rest / 3600, rest % 3600 / 60, rest % 60)
        return days == 0 ? clock : "\(days) day\(days == 1 ? "" : "s"), \(clock)"
    }

    /// One training log interval, mmengine's line: "Iter(train) [ 120/1200]  lr: 4.6105e-02  eta: 0:05:12
    /// time: 0.3120  data_time: 0.0040  memory: 148  loss: 1.2345  loss_aux: 0.3456  loss_ocr: 0.8889".
    public static func trainLine(iteration: Int, maxIters: Int, lr: Double, eta: Double, time: Double,
                                 dataTime: Double, memoryMB: Double, losses: [(String, Double)]) -> String {
        let width = String(maxIters).count
        let counter = String(repeating: " ", count: max(0, width - String(iteration).count)) + "\(iteration)/\(maxIters)"
        var parts = ["Iter(train) [\(counter)]", String(format: "lr: %.4e", lr), "eta: \(duration(eta))",
                     String(format: "time: %.4f", time), String(format: "data_time: %.4f", dataTime),
                     String(format: "memory: %.0f", memoryMB)]
        parts += losses.map { String(format: "%@: %.4f", $0.0, $0.1) }
        return parts.joined(separator: "  ")
    }
}

/// Progress through a known number of items (evaluation images, predictions), printed by rank 0. On a terminal
/// (`terminal`) one line is redrawn in place; otherwise (a Slurm log, a pipe) a plain line is printed every `percentStep` % or
/// every `seconds`, whichever comes first, and at the end.
public final class ProgressReporter {
    public let title: String
    public let total: Int
    let interactive: Bool
    let percentStep: Int
    let seconds: Double
    let start = Date()
    private var lastPrinted = Date()
    private var lastPercent = 0
    private let write: (String) -> Void

    /// Whether progress may redraw in place: stdout is a terminal and no launcher sits between (mpirun hands its
    /// ranks a pseudo-terminal even when its own output goes to a batch job's log file).
    public static var terminal: Bool { isatty(STDOUT_FILENO) == 1 && !Launcher.underMpirun }

    public init(_ title: String, total: Int, enabled: Bool, interactive: Bool = ProgressReporter.terminal,
                percentStep: Int = 10, seconds: Double = 30, write: @escaping (String) -> Void = { print($0, terminator: ""); fflush(stdout) }) {
        self.title = title
        self.total = total
        self.interactive = interactive
        self.percentStep = percentStep
        self.seconds = seconds
        self.write = enabled && total > 0 ? write : { _ in }
    }

    /// "Iter(val) [ 40/500]  8%  2.31 img/s  eta: 0:03:19".
    public func line(done: Int, now: Date = Date()) -> String {
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let width = String(total).count
        let counter = String(repeating: " ", count: max(0, width - String(done).count)) + "\(done)/\(total)"
        return "\(title) [\(counter)]  \(100 * done / max(total, 1))%  " + String(format: "%.2f img/s", rate)
            + "  eta: \(ConsoleFormat.duration(eta))"
    }

    /// `done` of `total` items finished.
    public func update(done: Int, now: Date = Date()) {
        let finished = done >= total
        if interactive {
            write("\r" + line(done: done, now: now) + (finished ? "\n" : ""))
            return
        }
        let percent = 100 * done / max(total, 1)
        guard finished || percent >= lastPercent + percentStep || now.timeIntervalSince(lastPrinted) >= seconds else { return }
        lastPercent = percent - percent % percentStep
        lastPrinted = now
        write(line(done: done, now: now) + "\n")
    }
}
