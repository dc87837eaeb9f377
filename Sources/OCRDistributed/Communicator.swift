import CMPI
import Foundation

/// What data parallelism needs from the process group, over MPI or within one process. Collectives must be reached
/// by every rank in the same order; each call blocks until the data is complete on this rank.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Rank among the processes on this machine, and how many there are (BLAS threads per rank = cores / local size).
    var localRank: Int { get }
    var localSize: Int { get }
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>)
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>)
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Int64>)
    /// Every rank's `send` (same length everywhere) concatenated in rank order into `receive` (size·count).
    func allgather(_ send: UnsafeBufferPointer<Double>, into receive: UnsafeMutableBufferPointer<Double>)
    func allgather(_ send: UnsafeBufferPointer<UInt64>, into receive: UnsafeMutableBufferPointer<UInt64>)
    func broadcast(_ values: UnsafeMutableRawBufferPointer, root: Int)
    func barrier()
    /// A communicator over the same ranks with its own message space, for collectives issued from another thread.
    func duplicate() -> Communicator
    /// Starts a nonblocking in-place sum. Open MPI 4.1 moves it forward only inside MPI calls (`test`, `wait`).
    func startAllreduceSum(_ values: UnsafeMutableBufferPointer<Float>) -> PendingCollective
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

    public func broadcast(_ values: UnsafeMutableBufferPointer<Float>, root: Int = 0) {
        broadcast(UnsafeMutableRawBufferPointer(values), root: root)
    }

    /// Broadcasts a string from `root` (length first, then the bytes).
    public func broadcast(_ text: String, root: Int = 0) -> String {
        var length = Int64(text.utf8.count)
        withUnsafeMutableBytes(of: &length) { broadcast($0, root: root) }
        var bytes = rank == root ? Array(text.utf8) : [UInt8](repeating: 0, count: Int(length))
        bytes.withUnsafeMutableBytes { broadcast($0, root: root) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// One value from every rank, in rank order.
    public func allgather(_ value: UInt64) -> [UInt64] {
        var out = [UInt64](repeating: 0, count: size)
        [value].withUnsafeBufferPointer { send in out.withUnsafeMutableBufferPointer { allgather(send, into: $0) } }
        return out
    }
}

/// The process group of a run that no launcher started: one rank, every collective the identity.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var localRank: Int { 0 }
    public var localSize: Int { 1 }
    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>) {}
    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>) {}
    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Int64>) {}
    public func allgather(_ send: UnsafeBufferPointer<Double>, into receive: UnsafeMutableBufferPointer<Double>) {
        _ = receive.initialize(from: send)
    }
    public func allgather(_ send: UnsafeBufferPointer<UInt64>, into receive: UnsafeMutableBufferPointer<UInt64>) {
        _ = receive.initialize(from: send)
    }
    public func broadcast(_ values: UnsafeMutableRawBufferPointer, root: Int) {}
    public func barrier() {}
    public func duplicate() -> Communicator { SingleProcess() }
    public func startAllreduceSum(_ values: UnsafeMutableBufferPointer<Float>) -> PendingCollective {
        CompletedCollective()
    }
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

    /// The MPI communicator when a launcher started us, the single process otherwise.
    public static func start() throws -> Communicator {
        detected ? try MPICommunicator() : SingleProcess()
    }
}

/// Open MPI's COMM_WORLD (or a duplicate of it). Initialised with MPI_THREAD_MULTIPLE: the gradient buckets are
/// reduced on a communication thread while sync BN runs collectives on the compute thread, each on its own
/// communicator.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    public let localRank: Int
    public let localSize: Int
    let comm: MPI_Comm
    private let ownsCommunicator: Bool

    public init() throws {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized == 0 {
            var provided: Int32 = 0
            MPI_Init_thread(nil, nil, ocr_mpi_thread_multiple(), &provided)
            guard provided >= ocr_mpi_thread_multiple() else {
                throw CommunicatorError("MPI granted thread level \(provided), but the gradient communication "
                                        + "thread needs MPI_THREAD_MULTIPLE (\(ocr_mpi_thread_multiple()))")
            }
        }
        comm = ocr_mpi_comm_world()
        ownsCommunicator = false
        (rank, size) = Self.rankAndSize(comm)
        let env = ProcessInfo.processInfo.environment
        localRank = Int(env["OMPI_COMM_WORLD_LOCAL_RANK"] ?? env["SLURM_LOCALID"] ?? "") ?? 0
        localSize = Int(env["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? Self.tasksOnThisNode(env) ?? size
    }

    private init(duplicateOf other: MPICommunicator) {
        var dup: MPI_Comm? = nil
        MPI_Comm_dup(other.comm, &dup)
        comm = dup!
        ownsCommunicator = true
        (rank, size) = Self.rankAndSize(comm)
        localRank = other.localRank
        localSize = other.localSize
    }

    deinit {
        if ownsCommunicator {
            var c: MPI_Comm? = comm
            MPI_Comm_free(&c)
        }
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

    private func allreduce(_ pointer: UnsafeMutableRawPointer?, _ count: Int, _ type: MPI_Datatype) {
        guard count > 0 else { return }
        check(MPI_Allreduce(ocr_mpi_in_place(), pointer, Int32(count), type, ocr_mpi_sum(), comm), "MPI_Allreduce")
    }

    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>) {
        allreduce(values.baseAddress, values.count, ocr_mpi_float())
    }

    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>) {
        allreduce(values.baseAddress, values.count, ocr_mpi_double())
    }

    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Int64>) {
        allreduce(values.baseAddress, values.count, ocr_mpi_int64())
    }

    public func allgather(_ send: UnsafeBufferPointer<Double>, into receive: UnsafeMutableBufferPointer<Double>) {
        precondition(receive.count == send.count * size)
        check(MPI_Allgather(send.baseAddress, Int32(send.count), ocr_mpi_double(), receive.baseAddress,
                            Int32(send.count), ocr_mpi_double(), comm), "MPI_Allgather")
    }

    public func allgather(_ send: UnsafeBufferPointer<UInt64>, into receive: UnsafeMutableBufferPointer<UInt64>) {
        precondition(receive.count == send.count * size)
        check(MPI_Allgather(send.baseAddress, Int32(send.count), ocr_mpi_uint64(), receive.baseAddress,
                            Int32(send.count), ocr_mpi_uint64(), comm), "MPI_Allgather")
    }

    public func broadcast(_ values: UnsafeMutableRawBufferPointer, root: Int) {
        // Chunked: MPI counts are 32-bit.
        var offset = 0
        while offset < values.count {
            let n = min(values.count - offset, 1 << 30)
            check(MPI_Bcast(values.baseAddress! + offset, Int32(n), ocr_mpi_byte(), Int32(root), comm), "MPI_Bcast")
            offset += n
        }
    }

    public func barrier() { check(MPI_Barrier(comm), "MPI_Barrier") }

    public func duplicate() -> Communicator { MPICommunicator(duplicateOf: self) }

    final class Request: PendingCollective {
        var request: MPI_Request? = ocr_mpi_request_null()
        var done = false
        func test() -> Bool {
            if !done {
                var flag: Int32 = 0
                MPI_Test(&request, &flag, ocr_mpi_status_ignore())
                done = flag != 0
            }
            return done
        }
        func wait() {
            if !done { MPI_Wait(&request, ocr_mpi_status_ignore()); done = true }
        }
    }

    public func startAllreduceSum(_ values: UnsafeMutableBufferPointer<Float>) -> PendingCollective {
        let r = Request()
        check(MPI_Iallreduce(ocr_mpi_in_place(), values.baseAddress, Int32(values.count), ocr_mpi_float(),
                             ocr_mpi_sum(), comm, &r.request), "MPI_Iallreduce")
        return r
    }

    /// Open MPI's default error handler aborts the job before we see a failure code; this is the backstop.
    private func check(_ code: Int32, _ what: String) {
        if code != ocr_mpi_success() {
            FileHandle.standardError.write("rank \(rank): \(what) failed with MPI error \(code)\n".data(using: .utf8)!)
            MPI_Abort(comm, 1)
        }
    }

    /// Ends MPI for this process (after the last collective).
    public static func finalize() {
        var initialized: Int32 = 0, finalized: Int32 = 0
        MPI_Initialized(&initialized)
        MPI_Finalized(&finalized)
        if initialized != 0 && finalized == 0 { MPI_Finalize() }
    }

    /// Kills every rank of the job (after a fatal error on one).
    public static func abort(code: Int32) {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized != 0 { MPI_Abort(ocr_mpi_comm_world(), code) }
    }
}
