import ArgumentParser
import Foundation
import OCRDistributed
import OCRTensor
import OCRTrain

/// Options every config-driven command shares.
struct ConfigOptions: ParsableArguments {
    @Option(name: .customLong("cfg-options"), parsing: .upToNextOption,
            help: "Override config keys: KEY=VALUE with dotted paths and list indices, e.g. train_cfg.max_iters=10 model.decode_head.1.dropout_ratio=0.")
    var overrides: [String] = []

    func load(_ path: String?) throws -> ExperimentConfig {
        try ExperimentConfig.load(path: path, overrides: overrides)
    }
}

/// Starts the process group (MPI under a launcher, one process otherwise), gives each rank cores/ranks BLAS threads
/// unless OPENBLAS_NUM_THREADS says otherwise, runs `body`, and ends MPI. A failure on one rank of several stops
/// the whole job (MPI_Abort) after printing its one-line reason, so no rank waits forever in a collective.
func withProcessGroup(_ body: (Communicator) throws -> Void) throws {
    let comm = try Launcher.start()
    let env = ProcessInfo.processInfo.environment
    let cores = ProcessInfo.processInfo.activeProcessorCount
    BLAS.setThreads(Int(env["OPENBLAS_NUM_THREADS"] ?? "") ?? max(1, cores / max(comm.localSize, 1)))
    do {
        try body(comm)
    } catch {
        if comm.size > 1 {
            FileHandle.standardError.write(Data("Error: rank \(comm.rank): \(error)\n".utf8))
            MPICommunicator.abort(code: 1)
        }
        throw error
    }
    MPICommunicator.finalize()
}
