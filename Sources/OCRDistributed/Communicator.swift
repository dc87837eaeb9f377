import CMPI
import Foundation

/// What data parallelism needs from the process group, over MPI or within one process. Collectives must be reached
/// by every rank in the same order; each call blocks until the data is complete on this rank. Every collective is
/// named (`phase`: "stop agreement", "sync BN backbone.layer1.0.bn1 statistics", …), as PyTorch's c10d names its
/// work: the watchdog reports the name of a collective that does not complete.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Rank among the processes on this machine, and how many there are (BLAS threads per rank = cores / local size).
    var localRank: Int { get }
    var localSize: Int { get }
    /// What the job is doing ("iteration 13"), for the watchdog's message; shared with duplicates.
    var stage: String { get set }
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>, phase: String)
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>, phase: String)
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Int64>, phase: String)
    /// Every rank's `send` (same length everywhere) concatenated in rank order into `receive` (size·count).
    func allgather(_ send: UnsafeBufferPointer<Double>, into receive: UnsafeMutableBufferPointer<Double>, phase: String)
    func allgather(_ send: UnsafeBufferPointer<UInt64>, into receive: UnsafeMutableBufferPointer<UInt64>, phase: String)
    func broadcast(_ values: UnsafeMutableRawBufferPointer, root: Int, phase: String)
    func barrier(phase: String)
    /// A communicator over the same ranks with its own message space, for collectives issued from another thread.
    func duplicate() -> Communicator
    /// The nonblocking collectives below move forward only inside MPI calls in Open MPI 4.1 (`test`, `wait`).
    /// Starts a sum of every rank's `values` (the same length everywhere) cut into parts `counts` long, in rank
    /// order: this rank receives part `rank` in `part`.
    func startReduceScatterSum(_ values: UnsafeBufferPointer<Float>, into part: UnsafeMutableBufferPointer<Float>,
                               counts: [Int], phase: String) -> PendingCollective
    /// Starts an in-place gather: `buffer` is cut into parts `byteCounts` long, in rank order; each rank's own part
    /// reaches every rank.
    func startAllgather(_ buffer: UnsafeMutableRawBufferPointer, byteCounts: [Int], phase: String) -> PendingCollective
    /// Starts an exchange of `bytesPerRank` blocks: block i of `send` goes to rank i, and block j of `receive`
    /// arrives from rank j.
    func startAlltoall(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer, bytesPerRank: Int,
                       phase: String) -> PendingCollective
    /// The node-aware split: the ranks on this machine (shared memory), and this rank's peers with the same local
    /// rank on every machine. nil when machines hold different numbers of ranks, where the parts would not line up.
    func nodeSplit() -> (node: Communicator, crossNode: Communicator)?
}

/// The MPI thread support a run asks for: `multiple` when collectives run on a communication thread beside the
/// compute thread (`GradientSynchronizer.Overlap.thread`), `funneled` otherwise. Some fabrics' MPI builds are slow
/// with MPI_THREAD_MULTIPLE, or refuse it.
public enum ThreadSupport: String, Sendable {
    case funneled = "MPI_THREAD_FUNNELED", multiple = "MPI_THREAD_MULTIPLE"
}

/// A nonblocking collective in flight.
public protocol PendingCollective: AnyObject {
    /// Progresses the operation; true once it is complete on this rank.
    func test() -> Bool
    func wait()
}

/// The trivially complete collective of a single process.
final class CompletedCollective: PendingCollective {
    func test() -> Bool { true }
    func wait() {}
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }

    public func broadcast(_ values: UnsafeMutableBufferPointer<Float>, root: Int = 0, phase: String) {
        broadcast(UnsafeMutableRawBufferPointer(values), root: root, phase: phase)
    }

    /// Broadcasts a string from `root` (length first, then the bytes).
    public func broadcast(_ text: String, root: Int = 0, phase: String) -> String {
        var length = Int64(text.utf8.count)
        withUnsafeMutableBytes(of: &length) { broadcast($0, root: root, phase: phase) }
        var bytes = rank == root ? Array(text.utf8) : [UInt8](repeating: 0, count: Int(length))
        bytes.withUnsafeMutableBytes { broadcast($0, root: root, phase: phase) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// One value from every rank, in rank order.
    public func allgather(_ value: UInt64, phase: String) -> [UInt64] {
        var out = [UInt64](repeating: 0, count: size)
        [value].withUnsafeBufferPointer { send in
            out.withUnsafeMutableBufferPointer { allgather(send, into: $0, phase: phase) }
        }
        return out
    }

    /// The largest of every rank's `value`.
    public func maximum(_ value: Double, phase: String) -> Double {
        var all = [Double](repeating: 0, count: size)
        [value].withUnsafeBufferPointer { send in all.withUnsafeMutableBufferPointer { allgather(send, into: $0, phase: phase) } }
        return all.max() ?? value
    }

    /// Runs `body` on every rank and makes the ranks agree on the outcome, so that a failure on some ranks never
    /// leaves the others waiting in the next collective: when `body` throws anywhere, every rank throws the same
    /// `AgreedFailure` carrying the lowest failing rank's message.
    public func agreeing<T>(_ phase: String, _ body: () throws -> T) throws -> T {
        var result: T?
        var failure = ""
        do { result = try body() } catch { failure = "\(error)" }
        guard size > 1 else {
            if let result { return result }
            throw AgreedFailure(failure)
        }
        let failed = allgather(result == nil ? 1 : 0, phase: phase)
        guard let first = failed.firstIndex(of: 1) else { return result! }
        let message = broadcast(failure, root: first, phase: phase)
        throw AgreedFailure("rank \(first): \(message)")
    }

    /// Whether any rank says yes (a one-value sum), so that all ranks take the same branch.
    public func anyRank(_ yes: Bool, phase: String) -> Bool {
        var flag: [Int64] = [yes ? 1 : 0]
        flag.withUnsafeMutableBufferPointer { allreduceSum($0, phase: phase) }
        return flag[0] > 0
    }
}

/// The process group of a run that no launcher started: one rank, every collective the identity.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var localRank: Int { 0 }
    public var localSize: Int { 1 }
    public var stage = ""
    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>, phase: String) {}
    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>, phase: String) {}
    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Int64>, phase: String) {}
    public func allgather(_ send: UnsafeBufferPointer<Double>, into receive: UnsafeMutableBufferPointer<Double>,
                          phase: String) {
        _ = receive.initialize(from: send)
    }
    public func allgather(_ send: UnsafeBufferPointer<UInt64>, into receive: UnsafeMutableBufferPointer<UInt64>,
                          phase: String) {
        _ = receive.initialize(from: send)
    }
    public func broadcast(_ values: UnsafeMutableRawBufferPointer, root: Int, phase: String) {}
    public func barrier(phase: String) {}
    public func duplicate() -> Communicator { SingleProcess() }
    public func startReduceScatterSum(_ values: UnsafeBufferPointer<Float>, into part: UnsafeMutableBufferPointer<Float>,
                                      counts: [Int], phase: String) -> PendingCollective {
        _ = part.initialize(from: values)
        return CompletedCollective()
    }
    public func startAllgather(_ buffer: UnsafeMutableRawBufferPointer, byteCounts: [Int],
                               phase: String) -> PendingCollective {
        CompletedCollective()
    }
    public func startAlltoall(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer,
                              bytesPerRank: Int, phase: String) -> PendingCollective {
        receive.copyMemory(from: UnsafeRawBufferPointer(rebasing: send.prefix(bytesPerRank)))
        return CompletedCollective()
    }
    public func nodeSplit() -> (node: Communicator, crossNode: Communicator)? { (SingleProcess(), SingleProcess()) }
}

/// A failure every rank of the job throws together (see `agreeing`): one line from rank 0 is enough, and the ranks
/// can end MPI cleanly instead of aborting each other.
public struct AgreedFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public struct CommunicatorError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum Launcher {
    /// Environment variables a launcher (mpirun, srun, PMIx/PMI) sets in every rank.
    public static let variables = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"]

    public static var detected: Bool {
        let env = ProcessInfo.processInfo.environment
        // SLURM_PROCID alone is also set inside a batch script that has not launched ranks yet; srun sets
        // SLURM_STEP_ID too. mpirun and PMIx launches set their own variables.
        if env["SLURM_PROCID"] != nil && env["SLURM_STEP_ID"] == nil
            && !variables.dropLast().contains(where: { env[$0] != nil }) { return false }
        return variables.contains { env[$0] != nil }
    }

    /// The MPI communicator when a launcher started us, the single process otherwise. `timeout`: seconds a
    /// collective may take before the watchdog aborts the job.
    public static func start(timeout: Double = defaultTimeout, threads: ThreadSupport = .funneled) throws -> Communicator {
        detected ? try MPICommunicator(timeout: timeout, threads: threads) : SingleProcess()
    }

    /// PyTorch's default process-group timeout, and mmengine's `env_cfg.dist_cfg.timeout` default.
    public static let defaultTimeout = 1800.0

    /// mpirun (Open MPI's ORTE) started this process: its ranks carry the address of the mpirun process.
    public static var underMpirun: Bool { ProcessInfo.processInfo.environment["OMPI_MCA_orte_hnp_uri"] != nil }

    /// Seconds mpirun waits between forwarding SIGTERM to the ranks and killing them (`odls_base_sigkill_timeout`,
    /// which the ranks see in their environment whether set there or with `--mca`).
    public static var mpirunKillGrace: Double {
        Double(ProcessInfo.processInfo.environment["OMPI_MCA_odls_base_sigkill_timeout"] ?? "") ?? 1
    }
}

/// Open MPI's COMM_WORLD, or a communicator made from it (a duplicate, a node's ranks). Under
/// MPI_THREAD_MULTIPLE the gradient buckets may be reduced on a communication thread while sync BN runs collectives
/// on the compute thread, each on its own communicator, and the watchdog thread talks on a third; under
/// MPI_THREAD_FUNNELED every call comes from the compute thread, and waits check the watchdog themselves. Every
/// collective is entered into the watchdog by name.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    public let localRank: Int
    public let localSize: Int
    /// The thread support MPI granted (at least what was asked for).
    public let threadSupport: ThreadSupport
    let comm: MPI_Comm
    private let ownsCommunicator: Bool
    private let watchdog: Watchdog?
    /// The watchdog of the world communicator, stopped before MPI_Finalize.
    nonisolated(unsafe) private static var worldWatchdog: Watchdog?

    public init(timeout: Double = Launcher.defaultTimeout, threads: ThreadSupport = .funneled) throws {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        var provided: Int32 = 0
        if initialized == 0 {
            let level = threads == .multiple ? ocr_mpi_thread_multiple() : ocr_mpi_thread_funneled()
            MPI_Init_thread(nil, nil, level, &provided)
            guard provided >= level else {
                throw CommunicatorError("MPI granted thread level \(provided), but this run needs \(threads.rawValue) "
                                        + "(\(level))" + (threads == .multiple ? " for the thread overlap" : ""))
            }
        } else {
            MPI_Query_thread(&provided)
        }
        threadSupport = provided >= ocr_mpi_thread_multiple() ? .multiple : .funneled
        comm = ocr_mpi_comm_world()
        ownsCommunicator = false
        (rank, size) = Self.rankAndSize(comm)
        let env = ProcessInfo.processInfo.environment
        localRank = Int(env["OMPI_COMM_WORLD_LOCAL_RANK"] ?? env["SLURM_LOCALID"] ?? "") ?? 0
        localSize = Int(env["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? Self.tasksOnThisNode(env) ?? size
        watchdog = size > 1 ? Watchdog(world: comm, rank: rank, size: size, timeout: timeout,
                                       ownThread: threadSupport == .multiple) : nil
        Self.worldWatchdog = watchdog
    }

    /// A communicator made from `other`'s (duplicate or split), sharing its watchdog.
    private init(_ made: MPI_Comm, of other: MPICommunicator) {
        comm = made
        ownsCommunicator = true
        (rank, size) = Self.rankAndSize(comm)
        localRank = other.localRank
        localSize = other.localSize
        threadSupport = other.threadSupport
        watchdog = other.watchdog
    }

    deinit {
        if ownsCommunicator {
            var c: MPI_Comm? = comm
            MPI_Comm_free(&c)
        }
    }

    public var stage: String {
        get { watchdog?.stage ?? "" }
        set { watchdog?.stage = newValue }
    }

    private static func rankAndSize(_ comm: MPI_Comm) -> (Int, Int) {
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        return (Int(r), Int(s))
    }

    /// Slurm's SLURM_TASKS_PER_NODE looks like "2(x3),1"; the first group is this node's count when tasks are
    /// spread evenly, which is how our scripts launch.
    private static func tasksOnThisNode(_ env: [String: String]) -> Int? {
        guard let spec = env["SLURM_TASKS_PER_NODE"] else { return nil }
        return Int(spec.prefix { $0.isNumber })
    }

    /// Runs one MPI collective to completion under the watchdog's eye: the blocking call when the watchdog has a
    /// thread of its own, else the nonblocking one waited for by `wait`, which checks the watchdog. A failure code
    /// aborts the job (Open MPI's default error handler normally aborts before we see one: this is the backstop).
    private func collective(_ phase: String, _ what: String, blocking: () -> Int32,
                            nonblocking: (inout MPI_Request?) -> Int32) {
        let token = watchdog?.enter(phase)
        if threadSupport == .multiple {
            check(blocking(), what, phase)
        } else {
            var request: MPI_Request? = ocr_mpi_request_null()
            check(nonblocking(&request), what, phase)
            Self.wait(&request, watchdog)
        }
        if let token { watchdog?.leave(token) }
    }

    /// MPI_Wait, or under MPI_THREAD_FUNNELED an MPI_Test loop that lets the watchdog check and answer meanwhile.
    /// The loop yields the core between tests, as Open MPI's own waits do when ranks outnumber cores: a rank
    /// spinning on a shared core would keep the rank it waits for from running (8 ms per small all-reduce measured
    /// at 2 ranks per core without it).
    static func wait(_ request: inout MPI_Request?, _ watchdog: Watchdog?) {
        guard let watchdog, !watchdog.hasThread else {
            MPI_Wait(&request, ocr_mpi_status_ignore())
            return
        }
        var flag: Int32 = 0
        while true {
            MPI_Test(&request, &flag, ocr_mpi_status_ignore())
            if flag != 0 { return }
            watchdog.check()
            sched_yield()
        }
    }

    private func check(_ code: Int32, _ what: String, _ phase: String) {
        if code != ocr_mpi_success() {
            FileHandle.standardError.write(Data("rank \(rank): \(what) (\(phase)) failed with MPI error \(code)\n".utf8))
            MPI_Abort(comm, 1)
        }
    }

    private func allreduce(_ pointer: UnsafeMutableRawPointer?, _ count: Int, _ type: MPI_Datatype, _ phase: String) {
        guard count > 0 else { return }
        collective(phase, "MPI_Allreduce",
                   blocking: { MPI_Allreduce(ocr_mpi_in_place(), pointer, Int32(count), type, ocr_mpi_sum(), comm) },
                   nonblocking: { MPI_Iallreduce(ocr_mpi_in_place(), pointer, Int32(count), type, ocr_mpi_sum(), comm, &$0) })
    }

    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>, phase: String) {
        allreduce(values.baseAddress, values.count, ocr_mpi_float(), phase)
    }

    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>, phase: String) {
        allreduce(values.baseAddress, values.count, ocr_mpi_double(), phase)
    }

    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Int64>, phase: String) {
        allreduce(values.baseAddress, values.count, ocr_mpi_int64(), phase)
    }

    public func allgather(_ send: UnsafeBufferPointer<Double>, into receive: UnsafeMutableBufferPointer<Double>,
                          phase: String) {
        gather(UnsafeRawBufferPointer(send), into: UnsafeMutableRawBufferPointer(receive), phase: phase)
    }

    public func allgather(_ send: UnsafeBufferPointer<UInt64>, into receive: UnsafeMutableBufferPointer<UInt64>,
                          phase: String) {
        gather(UnsafeRawBufferPointer(send), into: UnsafeMutableRawBufferPointer(receive), phase: phase)
    }

    private func gather(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer, phase: String) {
        precondition(receive.count == send.count * size)
        let n = Int32(send.count), byte = ocr_mpi_byte()
        collective(phase, "MPI_Allgather",
                   blocking: { MPI_Allgather(send.baseAddress, n, byte, receive.baseAddress, n, byte, comm) },
                   nonblocking: { MPI_Iallgather(send.baseAddress, n, byte, receive.baseAddress, n, byte, comm, &$0) })
    }

    public func broadcast(_ values: UnsafeMutableRawBufferPointer, root: Int, phase: String) {
        // Chunked: MPI counts are 32-bit.
        var offset = 0
        while offset < values.count {
            let n = min(values.count - offset, 1 << 30)
            let start = values.baseAddress! + offset
            collective(phase, "MPI_Bcast",
                       blocking: { MPI_Bcast(start, Int32(n), ocr_mpi_byte(), Int32(root), comm) },
                       nonblocking: { MPI_Ibcast(start, Int32(n), ocr_mpi_byte(), Int32(root), comm, &$0) })
            offset += n
        }
    }

    public func barrier(phase: String) {
        collective(phase, "MPI_Barrier", blocking: { MPI_Barrier(comm) }, nonblocking: { MPI_Ibarrier(comm, &$0) })
    }

    public func duplicate() -> Communicator {
        var dup: MPI_Comm? = nil
        MPI_Comm_dup(comm, &dup)
        return MPICommunicator(dup!, of: self)
    }

    public func nodeSplit() -> (node: Communicator, crossNode: Communicator)? {
        var shared: MPI_Comm? = nil
        MPI_Comm_split_type(comm, ocr_mpi_comm_type_shared(), Int32(rank), ocr_mpi_info_null(), &shared)
        let node = MPICommunicator(shared!, of: self)
        var peers: MPI_Comm? = nil
        MPI_Comm_split(comm, Int32(node.rank), Int32(rank), &peers)
        let crossNode = MPICommunicator(peers!, of: self)
        let nodeSizes = allgather(UInt64(node.size), phase: "node sizes")
        return Set(nodeSizes).count == 1 ? (node, crossNode) : nil
    }

    /// A nonblocking collective; it stays open in the watchdog until a `test` or `wait` sees it complete. It keeps
    /// the count arrays MPI reads until then.
    final class Request: PendingCollective {
        var request: MPI_Request? = ocr_mpi_request_null()
        var done = false
        let watchdog: Watchdog?
        let token: Int?
        var counts: [Int32] = [], displacements: [Int32] = []

        init(watchdog: Watchdog?, phase: String) {
            self.watchdog = watchdog
            token = watchdog?.enter(phase)
        }

        private func completed() {
            done = true
            if let token { watchdog?.leave(token) }
        }

        func test() -> Bool {
            if !done {
                var flag: Int32 = 0
                MPI_Test(&request, &flag, ocr_mpi_status_ignore())
                if flag != 0 { completed() }
            }
            return done
        }

        func wait() {
            if !done {
                MPICommunicator.wait(&request, watchdog)
                completed()
            }
        }
    }

    /// Starts `call` as a watched nonblocking collective.
    private func start(_ what: String, _ phase: String, counts: [Int] = [],
                       _ call: (Request) -> Int32) -> PendingCollective {
        let r = Request(watchdog: watchdog, phase: phase)
        r.counts = counts.map { Int32($0) }
        var offset: Int32 = 0
        r.displacements = r.counts.map { count in
            defer { offset += count }
            return offset
        }
        check(call(r), what, phase)
        return r
    }

    public func startReduceScatterSum(_ values: UnsafeBufferPointer<Float>, into part: UnsafeMutableBufferPointer<Float>,
                                      counts: [Int], phase: String) -> PendingCollective {
        precondition(counts.count == size && counts.reduce(0, +) == values.count && part.count == counts[rank])
        return start("MPI_Ireduce_scatter", phase, counts: counts) {
            MPI_Ireduce_scatter(values.baseAddress, part.baseAddress, $0.counts, ocr_mpi_float(), ocr_mpi_sum(), comm,
                                &$0.request)
        }
    }

    public func startAllgather(_ buffer: UnsafeMutableRawBufferPointer, byteCounts: [Int],
                               phase: String) -> PendingCollective {
        precondition(byteCounts.count == size && byteCounts.reduce(0, +) == buffer.count)
        return start("MPI_Iallgatherv", phase, counts: byteCounts) {
            MPI_Iallgatherv(ocr_mpi_in_place(), 0, ocr_mpi_byte(), buffer.baseAddress, $0.counts, $0.displacements,
                            ocr_mpi_byte(), comm, &$0.request)
        }
    }

    public func startAlltoall(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer,
                              bytesPerRank: Int, phase: String) -> PendingCollective {
        precondition(send.count == bytesPerRank * size && receive.count == send.count)
        return start("MPI_Ialltoall", phase) {
            MPI_Ialltoall(send.baseAddress, Int32(bytesPerRank), ocr_mpi_byte(), receive.baseAddress,
                          Int32(bytesPerRank), ocr_mpi_byte(), comm, &$0.request)
        }
    }

    /// Ends MPI for this process (after the last collective).
    public static func finalize() {
        var initialized: Int32 = 0, finalized: Int32 = 0
        MPI_Initialized(&initialized)
        MPI_Finalized(&finalized)
        if initialized != 0 && finalized == 0 {
            worldWatchdog?.stop()
            MPI_Finalize()
        }
    }

    /// Kills every rank of the job (after a fatal error on one).
    public static func abort(code: Int32) {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized != 0 { MPI_Abort(ocr_mpi_comm_world(), code) }
    }
}
