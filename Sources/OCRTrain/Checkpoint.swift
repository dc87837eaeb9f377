import Foundation
import OCRData
import OCRNN
import OCRTensor

/// What besides weights and momentum a resumed run needs to continue exactly where it stopped.
public struct TrainerState: Codable, Equatable {
    /// Optimizer steps completed.
    public var iteration: Int
    /// Position in the global sample stream after the last step (epoch, samples of it consumed over all ranks).
    public var samplerEpoch: Int
    public var samplerConsumed: Int
    public var seed: UInt64
    /// Written by older versions, whose dropout masks came from a per-head draw count; masks are now keyed by the
    /// samples' stream positions, so it is read and ignored.
    public var dropoutCalls: [UInt64]?
    public var bestMIoU: Double?
    public var bestIteration: Int?
    public var worldSize: Int
    /// How the run cut its global batch: ranks × batch per rank × accumulation. Absent in older checkpoints
    /// (then worldSize × the config's batch).
    public var layout: StepLayout?
    /// Peak resident memory of a rank (MB) when the checkpoint was written: a resume on fewer ranks judges from it
    /// whether a larger per-rank batch fits.
    public var peakMemoryMB: Double?
    public var configHash: String
    /// True when the evaluation due at `iteration` has not run to the end (a stop request came first); a run
    /// resumed from this checkpoint evaluates before it trains on. Absent in older checkpoints.
    public var pendingEvaluation: Bool?

    /// What makes a state read from a file unusable, naming the field; nil when it can be resumed from.
    public var problem: String? {
        if iteration < 0 { return "iteration \(iteration) is negative" }
        if samplerEpoch < 0 || samplerConsumed < 0 {
            return "sampler position (samplerEpoch \(samplerEpoch), samplerConsumed \(samplerConsumed)) is negative"
        }
        if worldSize < 1 { return "worldSize \(worldSize) is not a rank count" }
        if let layout {
            guard layout.ranks == worldSize else { return "layout.ranks \(layout.ranks) is not worldSize \(worldSize)" }
            guard (1...Pipeline.maximumSide).contains(layout.batchSize),
                  (1...ExperimentConfig.maximumAccumulation).contains(layout.accumulation) else {
                return "layout (batch \(layout.batchSize), accumulation \(layout.accumulation)) is out of range"
            }
        }
        if let peakMemoryMB, !(peakMemoryMB.isFinite && peakMemoryMB >= 0) { return "peakMemoryMB \(peakMemoryMB) is not a size" }
        if let bestMIoU, !(0...100).contains(bestMIoU) { return "bestMIoU \(bestMIoU) is not a percentage" }
        if let bestIteration, !(0...iteration).contains(bestIteration) {
            return "bestIteration \(bestIteration) is not an iteration up to \(iteration)"
        }
        return nil
    }

    public init(iteration: Int, samplerEpoch: Int, samplerConsumed: Int, seed: UInt64, bestMIoU: Double?,
                bestIteration: Int?, layout: StepLayout, configHash: String) {
        self.iteration = iteration; self.samplerEpoch = samplerEpoch; self.samplerConsumed = samplerConsumed
        self.seed = seed; self.bestMIoU = bestMIoU; self.bestIteration = bestIteration
        self.worldSize = layout.ranks; self.layout = layout; self.configHash = configHash
    }
}

/// Rank 0's checkpoints in the work directory: `iter_<N>/` holding `model.safetensors` (mmseg keys), `optimizer.safetensors`
/// (momentum buffers under the parameter keys) and `trainer_state.json`; `last_checkpoint` names the newest complete one
/// and `best_checkpoint` the best evaluated one, both relative to the work dir ("iter_<N>"), so a work dir that is moved
/// or copied resumes from its own files.
/// A checkpoint is written into a hidden staging directory, every file fsynced, then renamed into place, the parent
/// fsynced, and only then is `last_checkpoint` replaced (atomically): a crash at any moment leaves the previous
/// checkpoint loadable and the pointer naming a complete one. What a crash leaves behind (staging directories,
/// temporary files) is removed by `removeLeftovers` at the next start.
public struct CheckpointStore {
    public let workDir: String

    public init(workDir: String) { self.workDir = workDir }

    public static let modelFile = "model.safetensors"
    public static let optimizerFile = "optimizer.safetensors"
    public static let stateFile = "trainer_state.json"
    public static let pointerFile = "last_checkpoint"
    public static let bestPointerFile = "best_checkpoint"

    public static func name(iteration: Int) -> String { "iter_\(iteration)" }

    public func directory(iteration: Int) -> String { "\(workDir)/\(Self.name(iteration: iteration))" }

    public func save(store: ParameterStore, momentum: Tensor, state: TrainerState) throws {
        let final = directory(iteration: state.iteration)
        let staging = "\(workDir)/.\(Self.name(iteration: state.iteration)).tmp-\(getpid())"
        let files = FileManager.default
        try? files.removeItem(atPath: staging)
        do {
            try files.createDirectory(atPath: staging, withIntermediateDirectories: true)
            try store.saveStateDict(to: "\(staging)/\(Self.modelFile)")
            var optimizer = SafetensorsWriter()
            for p in store.parameters {
                optimizer.add(p.name, Tensor(viewOf: momentum, offset: p.offset, shape: p.shape))
            }
            try optimizer.write(to: "\(staging)/\(Self.optimizerFile)")
            try Self.writeState(state, to: staging)
        } catch {
            // A full disk or a vanished directory: the earlier checkpoints stay as they were, the partial one goes.
            try? files.removeItem(atPath: staging)
            throw CheckpointError("checkpoint \(final) not written: \(error)")
        }
        if files.fileExists(atPath: final) {
            // Same iteration saved again (a new run in a used work dir): replace it whole.
            let old = "\(workDir)/.\(Self.name(iteration: state.iteration)).old-\(getpid())"
            try files.moveItem(atPath: final, toPath: old)
            try files.moveItem(atPath: staging, toPath: final)
            try? files.removeItem(atPath: old)
        } else {
            try files.moveItem(atPath: staging, toPath: final)
        }
        syncDirectory(workDir)
        try writeFileAtomically(Data((Self.name(iteration: state.iteration) + "\n").utf8),
                                to: "\(workDir)/\(Self.pointerFile)")
    }

    static func writeState(_ state: TrainerState, to checkpoint: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeFileAtomically(try encoder.encode(state), to: "\(checkpoint)/\(stateFile)")
    }

    /// Records the evaluation of the checkpoint of `state.iteration`, written before it, without writing the weights
    /// again: its trainer state is replaced (the evaluation no longer pending, and the new best, so a run resumed
    /// from it keeps the same one), and when it scored `best` so far `best_checkpoint` names it.
    public func recordEvaluation(_ state: TrainerState, best: Bool) throws {
        let checkpoint = directory(iteration: state.iteration)
        try Self.writeState(state, to: checkpoint)
        guard best else { return }
        try writeFileAtomically(Data((Self.name(iteration: state.iteration) + "\n").utf8),
                                to: "\(workDir)/\(Self.bestPointerFile)")
    }

    /// The newest complete checkpoint: the one `last_checkpoint` names if it is complete, else the highest complete
    /// `iter_<N>`; nil when there is none. A pointer written by an older version holds an absolute path; when that
    /// path is gone (the work dir moved) its last component is looked up here.
    public func latest() -> String? {
        if let text = try? String(contentsOfFile: "\(workDir)/\(Self.pointerFile)", encoding: .utf8) {
            let named = text.trimmingCharacters(in: .whitespacesAndNewlines)
            let here = "\(workDir)/\((named as NSString).lastPathComponent)"
            for path in named.hasPrefix("/") ? [named, here] : [here] where isComplete(path) { return path }
        }
        return completeIterations().last.map { directory(iteration: $0) }
    }

    public func isComplete(_ path: String) -> Bool {
        [Self.modelFile, Self.optimizerFile, Self.stateFile].allSatisfy {
            FileManager.default.fileExists(atPath: "\(path)/\($0)")
        }
    }

    /// Iterations of the complete checkpoints, ascending.
    public func completeIterations() -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: workDir)) ?? []
        return names.compactMap { name -> Int? in
            guard name.hasPrefix("iter_"), let n = Int(name.dropFirst(5)), isComplete(directory(iteration: n)) else {
                return nil
            }
            return n
        }.sorted()
    }

    /// Deletes all but the newest `keep` of the checkpoints `isOwn` accepts, and never the best one. The trainer
    /// passes its own run's: a work dir may also hold another run's (an earlier, longer run in it, or the future of
    /// a run resumed from an earlier checkpoint), which count for nothing here and are never deleted: counted, a
    /// fresh run's first checkpoints were deleted as older than them, and the evaluation after them then failed.
    public func prune(keep: Int, best: Int?, isOwn: (Int) -> Bool = { _ in true }) {
        let all = completeIterations().filter(isOwn)
        for n in all.dropLast(keep) where n != best {
            try? FileManager.default.removeItem(atPath: directory(iteration: n))
        }
    }

    /// Removes what writers killed mid-save left in the work dir: staging directories `.iter_<N>.tmp-<pid>`,
    /// temporary files `<name>.tmp-<pid>` of atomic writes, and `.iter_<N>.old-<pid>` (a checkpoint being replaced,
    /// restored when the replacement never arrived). Files of a process that is still alive are left alone.
    /// Returns the names removed.
    @discardableResult
    public func removeLeftovers() -> [String] {
        let files = FileManager.default
        var removed: [String] = []
        for name in (try? files.contentsOfDirectory(atPath: workDir)) ?? [] {
            guard let marker = name.range(of: ".tmp-") ?? name.range(of: ".old-"),
                  let pid = Int32(name[marker.upperBound...]), kill(pid, 0) != 0 && errno == ESRCH else { continue }
            let path = "\(workDir)/\(name)"
            if name.hasPrefix(".iter_") && name[marker] == ".old-" {
                let original = "\(workDir)/\(name[name.index(after: name.startIndex)..<marker.lowerBound])"
                if !files.fileExists(atPath: original), (try? files.moveItem(atPath: path, toPath: original)) != nil {
                    continue
                }
            }
            if (try? files.removeItem(atPath: path)) != nil { removed.append(name) }
        }
        return removed
    }

    public static func readState(_ checkpoint: String) throws -> TrainerState {
        let path = "\(checkpoint)/\(stateFile)"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CheckpointError("\(path): cannot read trainer state")
        }
        return try parseState(data, path: path)
    }

    /// A trainer_state.json's bytes as a state that can be resumed from (`path` names them in errors).
    public static func parseState(_ data: Data, path: String) throws -> TrainerState {
        let state: TrainerState
        do { state = try JSONDecoder().decode(TrainerState.self, from: data) } catch {
            throw CheckpointError("\(path): not a valid trainer state (\(error))")
        }
        if let problem = state.problem { throw CheckpointError("\(path): \(problem)") }
        return state
    }

    /// Loads momentum buffers saved under parameter keys into the flat `momentum` tensor.
    public static func loadMomentum(_ checkpoint: String, store: ParameterStore, into momentum: Tensor) throws {
        let path = "\(checkpoint)/\(optimizerFile)"
        let file = try SafetensorsFile(path: path)
        for p in store.parameters {
            let t = try file.tensor(p.name)
            guard t.shape == p.shape else {
                throw CheckpointError("\(path): momentum of \(p.name) has shape \(t.shape), model has \(p.shape)")
            }
            (momentum.data + p.offset).update(from: t.data, count: t.count)
        }
    }
}

public struct CheckpointError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

func syncDirectory(_ path: String) {
    let fd = open(path, O_RDONLY)
    if fd >= 0 { fsync(fd); close(fd) }
}
