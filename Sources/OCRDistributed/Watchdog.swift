import CMPI
import Foundation

/// Ends a job whose collective has not completed within `timeout` seconds (mmengine's `env_cfg.dist_cfg.timeout`,
/// PyTorch's process-group timeout): a stopped rank (SIGSTOP, a hung filesystem read, a frozen node) would otherwise
/// leave every other rank waiting forever.
///
/// Every collective of `MPICommunicator` (and its duplicates) is entered here with its name, e.g. "sync BN
/// backbone.layer2.0.bn1 statistics" or "gradient bucket 3/12". The oldest open one is checked regularly; past the
/// timeout the watchdog asks every other rank's watchdog, over a communicator of its own, what that rank is doing,
/// waits a few seconds for the answers, prints one line on stderr naming the iteration, the collective and the ranks
/// that did not arrive (no answer = stopped, hung or dead), and aborts the job (MPI_Abort, non-zero exit). It also
/// answers such questions from other ranks; Open MPI moves messages only inside MPI calls, so it polls with MPI_Test.
/// Under MPI_THREAD_MULTIPLE a thread of its own does this; under MPI_THREAD_FUNNELED the rank's own waits do it
/// between their MPI_Test calls, so a rank answers only while it waits in a collective: past the timeout the ranks
/// that are not hung are all waiting, and answer.
final class Watchdog: @unchecked Sendable {
    let timeout: Double
    private let comm: MPI_Comm
    private let rank: Int
    private let size: Int

    private let lock = NSLock()
    private var open: [Int: (name: String, since: Double)] = [:]
    private var nextToken = 0
    private var lastCompleted = "none yet"
    /// What the job is doing ("iteration 13", "evaluation after iteration 12"), for the message.
    private var stageText = "start-up"
    private var stopping = false
    private var thread: Thread?
    /// Whether a thread of its own checks (else the waits call `check`).
    let hasThread: Bool
    private let finished = DispatchSemaphore(value: 0)
    /// The posted receive for other ranks' questions, and the question's buffer (a stable address for MPI).
    private var queryRequest: MPI_Request? = ocr_mpi_request_null()
    private let query = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
    private let poll: Double
    private var lastCheck = 0.0

    private static let queryTag: Int32 = 7101, answerTag: Int32 = 7102
    /// Answers are fixed-size UTF-8 text, so the receive buffer is known before the answer arrives.
    private static let answerBytes = 512

    /// Duplicates `world` (a collective: every rank constructs its watchdog at the same point). `ownThread`: check
    /// and answer on a thread of its own (needs MPI_THREAD_MULTIPLE); otherwise the ranks' waits call `check()`
    /// while they wait for a collective, all on the thread that owns MPI (MPI_THREAD_FUNNELED).
    init(world: MPI_Comm, rank: Int, size: Int, timeout: Double, ownThread: Bool) {
        var dup: MPI_Comm? = nil
        MPI_Comm_dup(world, &dup)
        comm = dup!
        self.rank = rank
        self.size = size
        self.timeout = timeout
        poll = max(0.05, min(1.0, timeout / 10))
        hasThread = ownThread
        query.initialize(to: 0)
        MPI_Irecv(query, 1, ocr_mpi_int64(), ocr_mpi_any_source(), Self.queryTag, comm, &queryRequest)
        guard ownThread else { return }
        let t = Thread { [unowned self] in self.loop() }
        t.name = "ocr-ddp watchdog"
        thread = t
        t.start()
    }

    var stage: String {
        get { lock.withLock { stageText } }
        set { lock.withLock { stageText = newValue } }
    }

    func enter(_ name: String) -> Int {
        let now = Self.now()
        return lock.withLock {
            nextToken += 1
            open[nextToken] = (name, now)
            return nextToken
        }
    }

    func leave(_ token: Int) {
        lock.withLock {
            if let done = open.removeValue(forKey: token) { lastCompleted = done.name }
        }
    }

    /// Stops the thread and withdraws the posted receive (before MPI_Finalize: no MPI afterwards).
    func stop() {
        lock.withLock { stopping = true }
        if thread != nil { finished.wait() }
        thread = nil
        if queryRequest != ocr_mpi_request_null() {
            MPI_Cancel(&queryRequest)
            MPI_Wait(&queryRequest, ocr_mpi_status_ignore())
        }
    }

    private static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// This rank's answer: the collective it waits in (or that it is between collectives) and its stage.
    private func currentActivity() -> String {
        lock.withLock {
            let now = Self.now()
            if let oldest = open.values.min(by: { $0.since < $1.since }) {
                return "in '\(oldest.name)' for \(Int(now - oldest.since)) s (\(stageText))"
            }
            return "in no collective, last completed '\(lastCompleted)' (\(stageText))"
        }
    }

    private func loop() {
        while !lock.withLock({ stopping }) {
            Thread.sleep(forTimeInterval: poll)
            check()
        }
        finished.signal()
    }

    /// Answers the questions that have arrived and aborts the job when a collective is overdue; at most once per
    /// poll interval (the waits of a thread-less watchdog call it in their MPI_Test loops).
    func check() {
        let now = Self.now()
        guard now - lastCheck >= poll else { return }
        lastCheck = now
        answerQueries()
        let overdue: (name: String, since: Double)? = lock.withLock {
            open.values.min(by: { $0.since < $1.since }).flatMap { now - $0.since > timeout ? $0 : nil }
        }
        if let overdue { abortJob(overdue) }
    }

    /// Answers every question that has arrived; leaves a receive posted for the next one.
    private func answerQueries() {
        while true {
            var flag: Int32 = 0
            var status = MPI_Status()
            MPI_Test(&queryRequest, &flag, &status)
            guard flag != 0 else { return }
            var answer = [UInt8](repeating: 0, count: Self.answerBytes)
            let text = Array(currentActivity().utf8.prefix(Self.answerBytes - 1))
            answer.replaceSubrange(0..<text.count, with: text)
            MPI_Send(&answer, Int32(Self.answerBytes), ocr_mpi_byte(), ocr_status_source(&status), Self.answerTag, comm)
            MPI_Irecv(query, 1, ocr_mpi_int64(), ocr_mpi_any_source(), Self.queryTag, comm, &queryRequest)
        }
    }

    private func abortJob(_ overdue: (name: String, since: Double)) -> Never {
        let others = (0..<size).filter { $0 != rank }
        var answers = [[UInt8]](repeating: [UInt8](repeating: 0, count: Self.answerBytes), count: size)
        var receives = [MPI_Request?](repeating: ocr_mpi_request_null(), count: size)
        var sends = [MPI_Request?](repeating: ocr_mpi_request_null(), count: size)
        var ask = Int64(rank)
        for r in others {
            MPI_Irecv(&answers[r], Int32(Self.answerBytes), ocr_mpi_byte(), Int32(r), Self.answerTag, comm, &receives[r])
            MPI_Isend(&ask, 1, ocr_mpi_int64(), Int32(r), Self.queryTag, comm, &sends[r])
        }
        var answered = Set<Int>()
        let deadline = Self.now() + min(10, max(2, timeout / 4))
        while answered.count < others.count && Self.now() < deadline {
            for r in others where !answered.contains(r) {
                var flag: Int32 = 0
                MPI_Test(&receives[r], &flag, ocr_mpi_status_ignore())
                if flag != 0 { answered.insert(r) }
            }
            answerQueries()   // others may be asking us at the same time
            Thread.sleep(forTimeInterval: 0.05)
        }
        var notArrived: [String] = []
        var details: [String] = []
        for r in others {
            guard answered.contains(r) else {
                notArrived.append("rank \(r)")
                details.append("rank \(r) did not answer (stopped, hung or dead)")
                continue
            }
            let text = String(decoding: answers[r].prefix { $0 != 0 }, as: UTF8.self)
            if !text.hasPrefix("in '\(overdue.name)'") { notArrived.append("rank \(r)") }
            details.append("rank \(r) is \(text)")
        }
        let who = notArrived.isEmpty ? "every rank arrived, but it did not complete"
            : "\(notArrived.joined(separator: ", ")) did not arrive"
        let line = "Error: rank \(rank): watchdog: collective '\(overdue.name)' at \(stage) has not completed after "
            + "\(Int(Self.now() - overdue.since)) s (env_cfg.dist_cfg.timeout \(Int(timeout)) s): \(who); "
            + details.joined(separator: "; ") + "; aborting the job\n"
        FileHandle.standardError.write(Data(line.utf8))
        // MPI_Abort asks mpirun to end the job; when mpirun is already ending it (another rank aborted first) the
        // call can wait for it forever, so the process ends itself a few seconds later whatever MPI does.
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: 5)
            _exit(3)
        }
        MPI_Abort(ocr_mpi_comm_world(), 3)
        _exit(3)
    }
}
