import Foundation
import OCRData
import OCRDistributed
import OCRModel
import OCRNN
import OCRTensor

/// The iteration-based training loop of `ocr-ddp train`: every rank runs it; rank 0 writes the work directory.
public final class Trainer {
    public let config: ExperimentConfig
    public let workDir: String
    public let comm: Communicator
    let log: RankLog
    let checkpoints: CheckpointStore

    /// Set from the SIGTERM/SIGINT handler: finish the step, checkpoint, exit cleanly.
    nonisolated(unsafe) static var stopRequested: sig_atomic_t = 0

    public init(config: ExperimentConfig, workDir: String, comm: Communicator) {
        self.config = config
        self.workDir = workDir
        self.comm = comm
        log = RankLog(comm: comm, workDir: workDir)
        checkpoints = CheckpointStore(workDir: workDir)
    }

    /// The dataset root; for the synthetic dataset a missing root is generated (by rank 0, under the work dir when
    /// the configured root does not exist).
    public static func dataRoot(_ config: ExperimentConfig, workDir: String, comm: Communicator) throws -> String {
        guard config.data.type == .synthetic, !FileManager.default.fileExists(atPath: config.data.dataRoot) else {
            return config.data.dataRoot
        }
        let root = "\(workDir)/synthetic"
        // Rank 0 writes; every rank then learns whether it worked, so a failure stops all ranks instead of leaving
        // the others waiting for data that never comes.
        var failure: Error?
        if comm.isRoot && !FileManager.default.fileExists(atPath: "\(root)/leftImg8bit") {
            do {
                try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
                try SyntheticDataset.write(to: root, train: SyntheticDataset.defaultTrainCount,
                                           val: SyntheticDataset.defaultValCount, seed: config.seed)
            } catch {
                failure = error
            }
        }
        var failed: [Int64] = [failure == nil ? 0 : 1]
        failed.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }
        if let failure { throw failure }
        if failed[0] > 0 { throw DataError(root, "rank 0 could not write the synthetic dataset") }
        return root
    }

    /// Trains from scratch, from `loadFrom` weights, or resumed from `resume` (a checkpoint directory, or "" for
    /// the newest in the work dir), until `train_cfg.max_iters`, evaluating and checkpointing on the way.
    /// `stopAtIteration` ends the run early exactly as a preemption signal does (checkpoint, clean exit), for jobs
    /// with a time limit that continue with --resume.
    public func run(resume: String?, loadFrom: String?, stopAtIteration: Int? = nil) throws {
        if comm.isRoot {
            try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
            try writeFileAtomically(Data(config.tree.yaml.utf8), to: "\(workDir)/config.yaml")
        }
        var data = config.data
        data.dataRoot = try Self.dataRoot(config, workDir: workDir, comm: comm)
        let trainSet = try data.trainDataset()
        let valSet = try data.valDataset()
        guard trainSet.numClasses == config.model.numClasses else {
            throw ConfigError("config key 'model.num_classes': \(config.model.numClasses), but the \(data.type.rawValue) "
                              + "dataset has \(trainSet.numClasses) classes")
        }

        let model = OCRNet(config: config.model, seed: config.seed)
        let sgd = SGD(store: model.store, learningRate: Float(config.learningRate), momentum: Float(config.momentum),
                      weightDecay: Float(config.weightDecay))
        var state = TrainerState(iteration: 0, samplerEpoch: 0, samplerConsumed: 0, seed: config.seed,
                                 dropoutCalls: [0, 0], bestMIoU: nil, bestIteration: nil, worldSize: comm.size,
                                 configHash: config.hash)
        // Rank 0 reads checkpoints and weights; DataParallel and the broadcasts below hand them to every rank, so
        // the other ranks need no access to the work dir.
        var stateJSON = ""
        var failure: String?
        if comm.isRoot {
            do {
                if let resume {
                    guard let checkpoint = resume.isEmpty ? checkpoints.latest() : resume else {
                        throw CheckpointError("\(workDir): --resume found no complete checkpoint to resume from")
                    }
                    let report = try model.store.loadStateDict(from: SafetensorsFile(path: "\(checkpoint)/\(CheckpointStore.modelFile)"))
                    guard report.isComplete else { throw CheckpointError("\(checkpoint): \(report)") }
                    try CheckpointStore.loadMomentum(checkpoint, store: model.store, into: sgd.momentumBuffer)
                    state = try CheckpointStore.readState(checkpoint)
                    if state.configHash != config.hash {
                        log.warning("resuming \(checkpoint) with a config that differs from the one it was trained with")
                    }
                    log.info("resumed from \(checkpoint) at iteration \(state.iteration)")
                } else if let loadFrom {
                    let report = try model.store.loadStateDict(from: SafetensorsFile(path: loadFrom))
                    guard !report.loaded.isEmpty else { throw CheckpointError("\(loadFrom): no tensor matches a model key") }
                    log.info("loaded \(loadFrom): \(report)")
                }
                stateJSON = String(decoding: try JSONEncoder().encode(state), as: UTF8.self)
            } catch {
                failure = "\(error)"
            }
        }
        stateJSON = comm.broadcast(failure == nil ? stateJSON : "", root: 0)
        guard !stateJSON.isEmpty else { throw CheckpointError(failure ?? "rank 0 could not load the starting weights") }
        state = try JSONDecoder().decode(TrainerState.self, from: Data(stateJSON.utf8))

        let ddp = try DataParallel(model: model, comm: comm, syncBatchNorm: config.syncBN, optimizer: sgd)
        comm.broadcast(UnsafeMutableBufferPointer(start: sgd.momentumBuffer.data, count: sgd.momentumBuffer.count))
        model.dropoutCalls = state.dropoutCalls
        let loader = data.trainLoader(trainSet, rank: comm.rank, ranks: comm.size, seed: config.seed,
                                      start: SamplerState(epoch: state.samplerEpoch, consumed: state.samplerConsumed))
        Self.installStopHandlers()
        log.info("training \(config.model.depth)-layer OCRNet on \(trainSet.count) images, \(comm.size) rank(s) × "
                 + "batch \(data.batchSize), iterations \(state.iteration)..<\(config.maxIters)")

        var window = (seconds: 0.0, data: 0.0, steps: 0)
        let runStart = Date()
        let startIteration = state.iteration
        while state.iteration < config.maxIters {
            let iter = state.iteration
            let stepStart = Date()
            sgd.learningRate = Float(config.learningRate(at: iter))
            guard let batch = try loader.next() else { throw DataError(data.dataRoot, "the training schedule ended") }
            let dataSeconds = Date().timeIntervalSince(stepStart)
            let losses = ddp.step([(batch.images, batch.labels)])
            guard losses.total.isFinite else {
                throw TrainingError("loss is \(losses.total) at iteration \(iter + 1); stopping. The last good checkpoint "
                                    + "is \(checkpoints.latest() ?? "none (none was written yet)")")
            }
            state.iteration = iter + 1
            state.samplerEpoch = batch.state.epoch
            state.samplerConsumed = batch.state.consumed
            state.dropoutCalls = model.dropoutCalls
            window.seconds += Date().timeIntervalSince(stepStart)
            window.data += dataSeconds
            window.steps += 1

            let done = state.iteration == config.maxIters
            if state.iteration % config.logInterval == 0 || done {
                let perStep = window.seconds / Double(window.steps)
                let eta = perStep * Double(config.maxIters - state.iteration)
                log.record([
                    "iter": state.iteration, "lr": Double(sgd.learningRate), "loss": Double(losses.total),
                    "loss_aux": Double(losses.aux), "loss_ocr": Double(losses.ocr), "time": perStep,
                    "data_time": window.data / Double(window.steps), "eta": eta, "memory_mb": peakResidentMB(),
                ])
                window = (0, 0, 0)
                try ReplicaConsistency.checkWeightsAgree(model.store, comm: comm, iteration: state.iteration)
            }
            if state.iteration % config.valInterval == 0 || done {
                let counts = try Evaluator(config: config, comm: comm).evaluate(model: model, dataset: valSet, data: data)
                model.training = true
                let mIoU = counts.metrics.mIoU ?? 0
                log.info("\n" + Evaluator.table(counts, classNames: valSet.classes.names))
                var entry = Evaluator.jsonObject(counts, classNames: valSet.classes.names)
                entry["iter"] = state.iteration
                log.record(entry)
                if state.bestMIoU.map({ mIoU > $0 }) ?? true {
                    state.bestMIoU = mIoU
                    state.bestIteration = state.iteration
                    try saveCheckpoint(model, sgd, state)
                }
            }
            let stop = agreeOnStop() || state.iteration == stopAtIteration
            if state.iteration % config.checkpointInterval == 0 || done || stop {
                try saveCheckpoint(model, sgd, state)
            }
            if stop {
                log.info("stop requested: checkpointed iteration \(state.iteration), exiting")
                break
            }
        }
        loader.stop()
        log.info(String(format: "finished %d iterations in %.1f s", state.iteration - startIteration,
                        Date().timeIntervalSince(runStart)))
    }

    private func saveCheckpoint(_ model: OCRNet, _ sgd: SGD, _ state: TrainerState) throws {
        guard comm.isRoot else { return }
        try checkpoints.save(store: model.store, momentum: sgd.momentumBuffer, state: state)
        checkpoints.prune(keep: config.maxKeep, best: state.bestIteration)
    }

    /// True on every rank when any rank was asked to stop (signals may reach ranks at different steps).
    private func agreeOnStop() -> Bool {
        var flag: [Int64] = [Int64(Self.stopRequested)]
        flag.withUnsafeMutableBufferPointer { comm.allreduceSum($0) }
        return flag[0] > 0
    }

    static func installStopHandlers() {
        for s in [SIGTERM, SIGINT] {
            signal(s) { _ in Trainer.stopRequested = 1 }
        }
    }
}

public struct TrainingError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Peak resident set size of this process in MiB (Linux getrusage reports KiB).
public func peakResidentMB() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
}
