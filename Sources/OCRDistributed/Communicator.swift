import CMPI
import Foundation
import OCRNN

/// What the trainer needs from the process group. `SingleProcess` is the fallback when no launcher started us;
/// `MPICommunicator` is Open MPI. (The distributed issue grows this: buckets, broadcast, sync BN.)
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Sums `values` over all ranks, in place.
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>)
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>)
    func barrier()
}

public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>) {}
    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>) {}
    public func barrier() {}
}

public enum Launcher {
    /// Environment variables a launcher (mpirun, srun, PMIx/PMI) sets in every rank.
    public static let variables = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"]

    public static var detected: Bool {
        let env = ProcessInfo.processInfo.environment
        return variables.contains { env[$0] != nil }
    }
}

public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    let comm: MPI_Comm

    /// Initialises MPI (thread level MULTIPLE, so a communication thread may call it) and checks what was granted.
    public init() throws {
        var provided: Int32 = 0
        MPI_Init_thread(nil, nil, ocr_mpi_thread_multiple(), &provided)
        guard provided >= ocr_mpi_thread_serialized() else {
            throw CommunicatorError("MPI provided thread level \(provided), need at least MPI_THREAD_SERIALIZED")
        }
        comm = ocr_mpi_comm_world()
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r); size = Int(s)
    }

    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>) {
        MPI_Allreduce(ocr_mpi_in_place(), values.baseAddress, Int32(values.count), ocr_mpi_float(), ocr_mpi_sum(), comm)
    }

    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>) {
        MPI_Allreduce(ocr_mpi_in_place(), values.baseAddress, Int32(values.count), ocr_mpi_double(), ocr_mpi_sum(), comm)
    }

    public func barrier() { MPI_Barrier(comm) }

    public func finalize() { MPI_Finalize() }
}

public struct CommunicatorError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
