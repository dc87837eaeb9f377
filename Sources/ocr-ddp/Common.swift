import ArgumentParser
import Foundation
import OCRData
import OCRDistributed
import OCRTensor
import OCRTrain

/// Options every config-driven command shares.
struct ConfigOptions: ParsableArguments {
    @Option(name: .customLong("cfg-options"), parsing: .upToNextOption,
            help: "Override config keys: KEY=VALUE with dotted paths and list indices, e.g. train_cfg.max_iters=10 model.decode_head.1.dropout_ratio=0.")
    var overrides: [String] = []

    func load(_ path: String?, amp: AmpOption? = nil) throws -> ExperimentConfig {
        try ExperimentConfig.load(path: path, overrides: (amp?.overrides ?? []) + overrides)
    }
}

/// `--amp`, as mmseg's tools/train.py has it: the config's optim_wrapper becomes an AmpOptimWrapper (here in
/// bf16, the CPU's mixed precision). `--cfg-options` still wins over it.
struct AmpOption: ParsableArguments {
    @Flag(help: "Mixed precision: convolutions and the OCR head's matrix products with bf16 operands and fp32 accumulation (optim_wrapper.type=AmpOptimWrapper, dtype=bfloat16).")
    var amp = false

    var overrides: [String] { amp ? ["optim_wrapper.type=AmpOptimWrapper", "optim_wrapper.dtype=bfloat16"] : [] }
}

/// Starts the process group (MPI under a launcher, one process otherwise; `timeout` for the collective watchdog,
/// `threads` the MPI thread support the run needs),
/// gives each rank cores/ranks BLAS threads unless OPENBLAS_NUM_THREADS says otherwise, runs `body`, and ends MPI.
/// A failure all ranks agreed on (`AgreedFailure`) is printed once, by rank 0, and every rank exits non-zero after
/// ending MPI; a failure on one rank only stops the whole job (MPI_Abort) after printing its one-line reason, so no
/// rank waits forever in a collective.
func withProcessGroup(timeout: Double = Launcher.defaultTimeout, threads: ThreadSupport = .funneled,
                      _ body: (Communicator) throws -> Void) throws {
    let comm = try Launcher.start(timeout: timeout, threads: threads)
    let env = ProcessInfo.processInfo.environment
    let cores = ProcessInfo.processInfo.activeProcessorCount
    BLAS.setThreads(Int(env["OPENBLAS_NUM_THREADS"] ?? "") ?? max(1, cores / max(comm.localSize, 1)))
    do {
        try body(comm)
    } catch let agreed as AgreedFailure where comm.size > 1 {
        MPICommunicator.finalize()
        guard comm.isRoot else { exit(1) }
        throw agreed
    } catch {
        if comm.size > 1 {
            FileHandle.standardError.write(Data("Error: rank \(comm.rank): \(error)\n".utf8))
            MPICommunicator.abort(code: 1)
        }
        throw error
    }
    MPICommunicator.finalize()
}

/// `--tta`: mmseg's `tools/test.py --tta`, the config's `tta_pipeline` (every ratio × flip view, softmax averaged)
/// in place of its test pipeline.
struct TestTimeAugmentationOption: ParsableArguments {
    @Flag(help: "Test-time augmentation as mmseg's --tta: the config's tta_pipeline views, softmax averaged.")
    var tta = false

    func views(_ experiment: ExperimentConfig) throws -> TestTimeAugmentation? {
        guard tta else { return nil }
        guard let augmentation = experiment.testTimeAugmentation else {
            throw ValidationError("--tta: the config has no tta_pipeline")
        }
        return augmentation
    }
}
