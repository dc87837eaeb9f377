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
    let log: TrainingLog
    let checkpoints: CheckpointStore
    /// The checkpoints of this run's lineage, the only ones pruning may delete: those it saved, and after a resume
    /// those up to the iteration it resumed from (which that run saved). Rank 0 keeps them.
    private var savedIterations: Set<Int> = []
    private var resumedIteration: Int?

    /// The signal that asked this process to stop (SIGTERM, SIGINT or SIGUSR1), 0 when none did: finish the step,
    /// checkpoint, exit 0. Set from the signal handler.
    nonisolated(unsafe) static var stopSignal: sig_atomic_t = 0

    public init(config: ExperimentConfig, workDir: String, comm: Communicator) {
        self.config = config
        self.workDir = workDir
        self.comm = comm
        log = TrainingLog(comm: comm, workDir: workDir)
        checkpoints = CheckpointStore(workDir: workDir)
    }

    /// The dataset root; for the synthetic dataset a missing root is generated (by rank 0, under the work dir when
    /// the configured root does not exist). Rank 0 decides whether the configured root exists, so ranks that see
    /// different file systems still take the same branch (and then meet the dataset comparison).
    public static func dataRoot(_ config: ExperimentConfig, workDir: String, comm: Communicator) throws -> String {
        guard config.data.type == .synthetic else { return config.data.dataRoot }
        let configuredExists = comm.broadcast(FileManager.default.fileExists(atPath: config.data.dataRoot) ? "1" : "0",
                                              phase: "synthetic data root agreement") == "1"
        if configuredExists { return config.data.dataRoot }
        let root = "\(workDir)/synthetic"
        try comm.agreeing("synthetic dataset write") {
            guard comm.isRoot, !FileManager.default.fileExists(atPath: "\(root)/leftImg8bit") else { return }
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try SyntheticDataset.write(to: root, train: SyntheticDataset.defaultTrainCount,
                                       val: SyntheticDataset.defaultValCount, seed: config.seed)
        }
        return root
    }

    public enum Split { case train, val }

    /// Lists a split on every rank and makes sure all ranks see the same files: node-local copies of a dataset can
    /// differ, and ranks training on different data would silently disagree. The ranks compare a hash of the
    /// sorted "path size" list; on a difference every rank fails with one line naming the first differing file.
    /// A dataset type whose class count is not the model's `numClasses` is refused.
    public static func agreedDataset(_ data: DataConfig, split: Split, numClasses: Int, labelsOptional: Bool = false,
                                     comm: Communicator) throws -> SegmentationDataset {
        let dataset = try comm.agreeing("dataset listing (\(split))") {
            let dataset = try split == .train ? data.trainDataset() : data.valDataset(labelsOptional: labelsOptional)
            guard dataset.numClasses == numClasses else {
                throw ConfigError("config key 'model.num_classes': \(numClasses), but the \(data.type.rawValue) "
                                  + "dataset has \(dataset.numClasses) classes")
            }
            return dataset
        }
        guard comm.size > 1 else { return dataset }
        let listing = dataset.listing
        let hashes = comm.allgather(fnv1a(listing.joined(separator: "\n")), phase: "dataset comparison (\(split))")
        guard Set(hashes).count > 1 else { return dataset }
        let rootListing = comm.broadcast(listing.joined(separator: "\n"), phase: "dataset comparison (\(split))")
            .split(separator: "\n").map(String.init)
        try comm.agreeing("dataset comparison report (\(split))") {
            guard hashes[comm.rank] != hashes[0] else { return }
            // Lines are "path size" (split at the last space: paths may hold spaces); the first path in sorted
            // order whose size differs or that one side lacks.
            let sizes = { (lines: [String]) in
                Dictionary(lines.map { line in
                    let space = line.lastIndex(of: " ") ?? line.endIndex
                    return (line[..<space], line[space...].dropFirst())
                }, uniquingKeysWith: { a, _ in a })
            }
            let (mine, theirs) = (sizes(listing), sizes(rootListing))
            let differing = Set(mine.keys).union(theirs.keys).filter { mine[$0] != theirs[$0] }.sorted()
            let bytes = { (size: Substring?) in size.map { $0 == "-1" ? "unreadable" : "\($0) bytes" } ?? "absent" }
            let first = differing.first ?? "?"
            throw DataError("\(data.dataRoot)/\(first)", "differs across ranks: \(bytes(mine[first])) on rank "
                            + "\(comm.rank), \(bytes(theirs[first])) on rank 0 (\(split) split: \(listing.count / 2) "
                            + "vs \(rootListing.count / 2) samples); every rank must read the same dataset")
        }
        return dataset
    }

    /// Trains from scratch, from `loadFrom` weights, or resumed from `resume` (a checkpoint directory, or "" for
    /// the newest in the work dir), until `train_cfg.max_iters`, checkpointing and then evaluating on the way.
    /// `stopAtIteration` ends the run early exactly as a preemption signal does (checkpoint, clean exit), for jobs
    /// with a time limit that continue with --resume.
    public func run(resume: String?, loadFrom: String?, stopAtIteration: Int? = nil) throws {
        Self.installStopHandlers()
        comm.stage = "start-up"
        if comm.isRoot {
            try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
            for name in checkpoints.removeLeftovers() { log.info("removed \(workDir)/\(name), left by a crashed save") }
            try writeFileAtomically(Data(config.tree.yaml.utf8), to: "\(workDir)/config.yaml")
        }
        var data = config.data
        data.dataRoot = try Self.dataRoot(config, workDir: workDir, comm: comm)
        let trainSet = try Self.agreedDataset(data, split: .train, numClasses: config.model.numClasses, comm: comm)
        let valSet = try Self.agreedDataset(data, split: .val, numClasses: config.model.numClasses, comm: comm)

        let model = OCRNet(config: config.model, seed: config.seed)
        let (precision, precisionNote) = config.availablePrecision
        model.store.trainingPrecision = precision
        if let precisionNote, comm.isRoot { log.warning(precisionNote) }
        let sgd = SGD(store: model.store, learningRate: Float(config.learningRate), momentum: Float(config.momentum),
                      weightDecay: Float(config.weightDecay))
        let configLayout = StepLayout(ranks: comm.size, batchSize: data.batchSize, accumulation: config.accumulation)
        var state = TrainerState(iteration: 0, samplerEpoch: 0, samplerConsumed: 0, seed: config.seed,
                                 bestMIoU: nil, bestIteration: nil, layout: configLayout, configHash: config.hash)
        // Rank 0 reads checkpoints and weights; DataParallel and the broadcasts below hand them to every rank, so
        // the other ranks need no access to the work dir.
        let stateJSON = try comm.agreeing("starting weights") { () -> String in
            guard comm.isRoot else { return "" }
            if let resume {
                guard let checkpoint = resume.isEmpty ? checkpoints.latest() : resume else {
                    throw CheckpointError("\(workDir): --resume found no complete checkpoint to resume from")
                }
                let report = try model.store.loadStateDict(from: SafetensorsFile(path: "\(checkpoint)/\(CheckpointStore.modelFile)"))
                guard report.isComplete else { throw CheckpointError("\(checkpoint): \(report.summary)") }
                try CheckpointStore.loadMomentum(checkpoint, store: model.store, into: sgd.momentumBuffer)
                state = try CheckpointStore.readState(checkpoint)
                if state.configHash != config.hash {
                    log.warning("resuming \(checkpoint) with a config that differs from the one it was trained with")
                }
                log.info("resumed from \(checkpoint) at iteration \(state.iteration)")
                resumedIteration = state.iteration
                // The layout that wrote it (older checkpoints: their rank count × this config's batch), re-cut for
                // this run's ranks; rank 0 chooses (memory is judged here) and the state carries it to every rank.
                let saved = state.layout ?? StepLayout(ranks: state.worldSize, batchSize: data.batchSize,
                                                       accumulation: config.accumulation)
                let plan = try ElasticPlan.choose(
                    config: configLayout, saved: saved, syncBN: config.syncBN, autoScaleLR: config.autoScaleBaseBatch != nil,
                    fits: { batchFitsInMemory($0, savedBatch: saved.batchSize, savedPeakMB: state.peakMemoryMB,
                                              ranksOnNode: comm.localSize) })
                if let note = plan.note { log.info(note) }
                state.layout = plan.layout
                state.worldSize = comm.size
            } else if let loadFrom {
                let report = try model.store.loadStateDict(from: SafetensorsFile(path: loadFrom))
                guard !report.loaded.isEmpty else { throw CheckpointError("\(loadFrom): no tensor matches a model key") }
                log.info("loaded \(loadFrom): \(report)")
            }
            return String(decoding: try JSONEncoder().encode(state), as: UTF8.self)
        }
        state = try JSONDecoder().decode(TrainerState.self,
                                         from: Data(comm.broadcast(stateJSON, phase: "trainer state").utf8))

        let ddp = try DataParallel(model: model, comm: comm, syncBatchNorm: config.syncBN, optimizer: sgd,
                                   communication: config.gradientCommunication)
        if let note = ddp.synchronizer.topologyNote { log.warning("\(note)") }
        comm.broadcast(UnsafeMutableBufferPointer(start: sgd.momentumBuffer.data, count: sgd.momentumBuffer.count),
                       phase: "broadcast of rank 0's momentum")
        let layout = state.layout ?? configLayout
        state.dropoutCalls = nil
        let loader = data.trainLoader(trainSet, layout: layout, rank: comm.rank, seed: config.seed,
                                      start: SamplerState(epoch: state.samplerEpoch, consumed: state.samplerConsumed))
        defer { loader.stop() }
        let learningRates = config.learningRates(globalBatch: layout.globalBatch)
        log.info("training OCRNet (\(config.model.backboneName)) on \(trainSet.count) images, "
                 + "\(ElasticPlan.describe(layout)) (global batch \(layout.globalBatch)), "
                 + "iterations \(state.iteration)..<\(config.maxIters)"
                 + (config.autoScaleBaseBatch.map { ", LR × \(layout.globalBatch)/\($0) (auto_scale_lr)" } ?? "")
                 + (precision == .bfloat16 ? ", bf16 GEMM operands (\(BF16.kernelName))" : "")
                 + (comm.size > 1 ? ", " + ddp.synchronizer.describe : ""))

        // The process's peak memory after its first steps is training's own, unless an evaluation ran first.
        let evaluatesFirst = state.pendingEvaluation == true
        if evaluatesFirst {
            log.info("evaluating iteration \(state.iteration) first: the run that checkpointed it stopped before its "
                     + "evaluation ended")
            comm.stage = "evaluation after iteration \(state.iteration)"
            guard try evaluateAndRecord(model, valSet, data, &state) else {
                log.info("stop requested\(Self.stopSignalName) during evaluation, exiting")
                return
            }
        }
        var window = (seconds: 0.0, data: 0.0, steps: 0)
        var lastSaveSeconds: Double?
        let runStart = Date()
        let startIteration = state.iteration
        while state.iteration < config.maxIters {
            let iter = state.iteration
            comm.stage = "iteration \(iter + 1)"
            let stepStart = Date()
            sgd.learningRate = Float(learningRates[iter])
            let batches = try (0..<layout.accumulation).map { _ in
                guard let batch = try loader.next() else { throw DataError(data.dataRoot, "the training schedule ended") }
                if data.trainPipeline.padSize == nil { try checkBatchNormValues(batch) }
                return batch
            }
            let dataSeconds = Date().timeIntervalSince(stepStart)
            let losses = ddp.step(batches.map { ($0.images, $0.labels, $0.tickets.map { UInt64($0.position) }) })
            guard losses.total.isFinite else {
                // The loss is averaged over the ranks, so every rank stops here together.
                throw AgreedFailure("loss is \(losses.total) at iteration \(iter + 1); stopping. The last good checkpoint "
                                    + "is \(checkpoints.latest() ?? "none (none was written yet)")")
            }
            state.iteration = iter + 1
            state.samplerEpoch = batches.last!.state.epoch
            state.samplerConsumed = batches.last!.state.consumed
            let stepSeconds = Date().timeIntervalSince(stepStart)
            window.seconds += stepSeconds
            window.data += dataSeconds
            window.steps += 1
            if state.iteration == startIteration + min(2, config.maxIters - startIteration) {
                warnIfKillGraceIsShort(stepSeconds: stepSeconds, saveSeconds: lastSaveSeconds, model: model)
                // Kept for a resume on fewer ranks (batchFitsInMemory).
                if !evaluatesFirst { state.peakMemoryMB = peakResidentMB() }
            }

            let done = state.iteration == config.maxIters
            if state.iteration % config.logInterval == 0 || done {
                let perStep = window.seconds / Double(window.steps)
                let eta = perStep * Double(config.maxIters - state.iteration)
                let (dataTime, memory) = (window.data / Double(window.steps), peakResidentMB())
                try log.record([
                    "iter": state.iteration, "lr": Double(sgd.learningRate), "loss": Double(losses.total),
                    "loss_aux": Double(losses.aux), "loss_ocr": Double(losses.ocr), "time": perStep,
                    "data_time": dataTime, "eta": eta, "memory_mb": memory, "rss_mb": residentMB(),
                ])
                let terms = [("loss", Double(losses.total)), ("loss_aux", Double(losses.aux)), ("loss_ocr", Double(losses.ocr))]
                log.info(ConsoleFormat.trainLine(
                    iteration: state.iteration, maxIters: config.maxIters, lr: Double(sgd.learningRate), eta: eta,
                    time: perStep, dataTime: dataTime, memoryMB: memory, losses: terms))
                try log.scalars(step: state.iteration, terms.map { ("train/\($0.0)", $0.1) }
                                + [("train/lr", Double(sgd.learningRate)), ("train/time", perStep), ("train/memory_mb", memory)])
                window = (0, 0, 0)
                try ReplicaConsistency.checkWeightsAgree(model.store, comm: comm, iteration: state.iteration)
            }
            let stop = agreeOnStop() || state.iteration == stopAtIteration
            let evaluate = state.iteration % config.valInterval == 0 || done
            // Checkpoint first: an evaluation that fails or runs out of memory must not cost the interval's training.
            state.pendingEvaluation = evaluate ? true : nil
            if state.iteration % config.checkpointInterval == 0 || done || stop || evaluate {
                let saveStart = Date()
                try saveCheckpoint(model, sgd, state)
                lastSaveSeconds = Date().timeIntervalSince(saveStart)
            }
            if stop {
                if evaluate { log.info("evaluation of iteration \(state.iteration) left for the resumed run: stop requested") }
                log.info("stop requested\(Self.stopSignalName): checkpointed iteration \(state.iteration), exiting")
                break
            }
            if evaluate {
                comm.stage = "evaluation after iteration \(state.iteration)"
                guard try evaluateAndRecord(model, valSet, data, &state) else {
                    log.info("stop requested\(Self.stopSignalName) during evaluation: iteration \(state.iteration) is "
                             + "checkpointed, exiting")
                    break
                }
            }
        }
        log.info(String(format: "finished %d iterations in %.1f s", state.iteration - startIteration,
                        Date().timeIntervalSince(runStart)))
    }

    /// Evaluates the checkpointed model and records it in the checkpoint (best or not). Returns false when a stop
    /// was requested during evaluation (it stays pending). A failed evaluation stops training (non-zero) or, with
    /// `train_cfg.on_val_error: continue`, is reported and training goes on; the checkpoint is on disk either way.
    private func evaluateAndRecord(_ model: OCRNet, _ valSet: SegmentationDataset, _ data: DataConfig,
                                     _ state: inout TrainerState) throws -> Bool {
        // Without sync BN every rank's running statistics follow its own batches: evaluate (and keep) rank 0's.
        if !config.syncBN { ReplicaConsistency.broadcastBuffers(model.store, comm: comm) }
        defer {
            model.training = true
            releaseEvaluationMemory(model)
        }
        let counts: SegmentationCounts?
        do {
            counts = try Evaluator(config: config, comm: comm).evaluate(
                model: model, dataset: valSet, data: data,
                progress: ProgressReporter("Iter(val)", total: valSet.count, enabled: comm.isRoot),
                stopRequested: { Self.stopSignal != 0 })
        } catch {
            let message = "evaluation at iteration \(state.iteration) failed: \(error) (checkpoint "
                + "\(checkpoints.directory(iteration: state.iteration)) is saved)"
            // Every rank failed together (the evaluator agrees on failures): one line, a clean non-zero exit.
            guard config.onValError == .continue else { throw AgreedFailure(message) }
            log.warning(message + "; continuing (train_cfg.on_val_error: continue)")
            state.pendingEvaluation = nil
            if comm.isRoot { try checkpoints.recordEvaluation(state, best: false) }
            return true
        }
        guard let counts else { return false }
        let mIoU = counts.metrics.mIoU ?? 0
        log.info(Evaluator.table(counts, classNames: valSet.classes.names))
        var entry = Evaluator.jsonObject(counts, classNames: valSet.classes.names)
        entry["iter"] = state.iteration
        entry["rss_mb"] = residentMB()   // before the evaluation's memory is released
        try log.record(entry)
        let metrics = counts.metrics
        try log.scalars(step: state.iteration,
                        [("val/mIoU", metrics.mIoU), ("val/aAcc", metrics.aAcc), ("val/mAcc", metrics.mAcc)].compactMap { tag, value in
                            value.map { (tag, $0) }
                        } + zip(valSet.classes.names, metrics.iou).compactMap { name, iou in iou.map { ("val/IoU/\(name)", $0) } })
        if comm.isRoot {
            // The figure is for people: failing to draw it is a warning, not a reason to stop training.
            do { try TrainingCurves.write(logFile: "\(workDir)/log.jsonl", to: "\(workDir)/curves.png") } catch {
                log.warning("\(error)")
            }
        }
        let best = state.bestMIoU.map { mIoU > $0 } ?? true
        if best {
            state.bestMIoU = mIoU
            state.bestIteration = state.iteration
        }
        state.pendingEvaluation = nil
        if comm.isRoot { try checkpoints.recordEvaluation(state, best: best) }
        return true
    }

    /// Batch norm in training needs two values per channel (else its statistics are NaN; PyTorch raises). Without
    /// a pad size a batch is as large as its largest image, so small enough images leave one value; the config
    /// check covers pipelines with a pad size. With sync BN over several ranks every rank adds at least one value,
    /// so only plain BN (or one process) can fall short; the rank that does stops the job with the reason.
    private func checkBatchNormValues(_ batch: Batch) throws {
        guard !(config.syncBN && comm.size > 1) else { return }
        let (h, w) = (config.model.smallestFeatureSide(batch.images.shape[2]),
                      config.model.smallestFeatureSide(batch.images.shape[3]))
        guard batch.images.shape[0] * h * w >= 2 else {
            throw DataError(batch.names[0], "a training batch of \(batch.images.shape[0]) image(s) of "
                            + "\(batch.images.shape[2])×\(batch.images.shape[3]) gives a \(h)×\(w) smallest feature "
                            + "map, one value per channel for batch norm: add a RandomCrop or Pad, or a larger batch")
        }
    }

    /// Evaluation runs on whole images, larger than training crops (Cityscapes: 1024×2048 against 512×1024), so
    /// its scratch and recycled blocks would stay mapped for the rest of the run, unused by training: free them.
    /// Layers' cached outputs are replaced by the next step.
    private func releaseEvaluationMemory(_ model: OCRNet) {
        TensorPool.shared.releaseFree()
        model.store.workspace.release()
    }

    private func saveCheckpoint(_ model: OCRNet, _ sgd: SGD, _ state: TrainerState) throws {
        // A failed save (full disk) stops every rank with rank 0's one-line reason.
        try comm.agreeing("checkpoint save") {
            guard comm.isRoot else { return }
            try checkpoints.save(store: model.store, momentum: sgd.momentumBuffer, state: state)
            savedIterations.insert(state.iteration)
            let (saved, resumed) = (savedIterations, resumedIteration ?? -1)
            checkpoints.prune(keep: config.maxKeep, best: state.bestIteration) { saved.contains($0) || $0 <= resumed }
        }
    }

    /// mpirun forwards SIGTERM to the ranks and kills them `odls_base_sigkill_timeout` seconds later (1 by
    /// default): a SIGTERM then loses the step in flight and its checkpoint. Said once, after the second step,
    /// when the grace is shorter than a step plus a checkpoint (the last save's time, or weights and momentum at
    /// 200 MB/s before the first save).
    private func warnIfKillGraceIsShort(stepSeconds: Double, saveSeconds: Double?, model: OCRNet) {
        guard Launcher.underMpirun, comm.size > 1, comm.isRoot else { return }
        let grace = Launcher.mpirunKillGrace
        let checkpointSeconds = saveSeconds ?? Double(2 * 4 * model.store.values.count) / 200e6
        let needed = (stepSeconds + checkpointSeconds) * 1.25 + 0.5   // margin: steps vary
        guard grace < needed else { return }
        let suggestion = max(30, Int(needed.rounded(.up)) * 2)
        let fix = ProcessInfo.processInfo.environment["OCR_DDP_STOP_FORWARDED"] != nil
            ? "Launch/dist_train.sh passes SIGTERM to it as SIGUSR1, which is safe; where mpirun itself may get "
              + "SIGTERM, set KILL_GRACE=\(suggestion)"
            : "Launch with Launch/dist_train.sh, or export OMPI_MCA_odls_base_sigkill_timeout=\(suggestion) before "
              + "mpirun (README, Preemption); SIGUSR1 is always safe"
        log.warning(String(format: "mpirun kills the ranks %.0f s after a SIGTERM (odls_base_sigkill_timeout), but a "
                           + "step and its checkpoint take about %.1f s: a SIGTERM to mpirun would lose them. ",
                           grace, stepSeconds + checkpointSeconds) + fix)
    }

    /// True on every rank when any rank was asked to stop (signals may reach ranks at different steps).
    private func agreeOnStop() -> Bool { comm.anyRank(Self.stopSignal != 0, phase: "stop agreement") }

    static var stopSignalName: String {
        switch Self.stopSignal {
        case SIGTERM: " (SIGTERM)"
        case SIGINT: " (SIGINT)"
        case SIGUSR1: " (SIGUSR1)"
        default: ""
        }
    }

    /// SIGTERM (Slurm's preemption and time limit, mpirun passing on its own), SIGINT (Ctrl-C) and SIGUSR1
    /// (`srun --signal=USR1@N`, forwarded by mpirun) all mean: finish the step, checkpoint, exit 0. A second Ctrl-C
    /// means now.
    static func installStopHandlers() {
        for s in [SIGTERM, SIGINT, SIGUSR1] {
            signal(s) { received in
                if received == SIGINT && Trainer.stopSignal == SIGINT { _exit(130) }
                Trainer.stopSignal = received
            }
        }
    }
}

/// Peak resident set size of this process in MiB (Linux getrusage reports KiB).
public func peakResidentMB() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
}

/// Resident set size of this process now, in MiB (/proc/self/statm: pages); 0 where there is no /proc.
public func residentMB() -> Double {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
          let pages = statm.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { return 0 }
    return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
}
