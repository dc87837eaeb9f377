import Foundation
import OCRNN
import OCRTensor

/// What besides weights and momentum a resumed run needs to continue exactly where it stopped.
public struct TrainerState: Codable, Equatable {
    /// Optimizer steps completed.
    public var iteration: Int
    /// Sampler position after the last step (epoch, samples consumed in it over all ranks).
    public var samplerEpoch: Int
    public var samplerConsumed: Int
    public var seed: UInt64
    /// Dropout draws made so far by each head (their masks come from (seed, draw)).
    public var dropoutCalls: [UInt64]
    public var bestMIoU: Double?
    public var bestIteration: Int?
    public var worldSize: Int
    public var configHash: String

    public init(iteration: Int, samplerEpoch: Int, samplerConsumed: Int, seed: UInt64, dropoutCalls: [UInt64],
                bestMIoU: Double?, bestIteration: Int?, worldSize: Int, configHash: String) {
        self.iteration = iteration; self.samplerEpoch = samplerEpoch; self.samplerConsumed = samplerConsumed
        self.seed = seed; self.dropoutCalls = dropoutCalls; self.bestMIoU = bestMIoU
        self.bestIteration = bestIteration; self.worldSize = worldSize; self.configHash = configHash
    }
}

/// Rank 0's checkpoints in the work directory: `iter_<N>/` holding `model.safetensors` (mmseg keys), `optimizer.safetensors`
/// (momentum buffers under the parameter keys) and `trainer_state.json`; `last_checkpoint` names the newest complete one.
/// A checkpoint is written into a hidden temporary directory, every file fsynced, then renamed into place, the parent
/// fsynced, and only then is `last_checkpoint` replaced (atomically): a crash at any moment leaves the previous
/// checkpoint loadable and the pointer naming a complete one.
public struct CheckpointStore {
    public let workDir: String

    public init(workDir: String) { self.workDir = workDir }

    public static let modelFile = "model.safetensors"
    public static let optimizerFile = "optimizer.safetensors"
    public static let stateFile = "trainer_state.json"
    public static let pointerFile = "last_checkpoint"

    public func directory(iteration: Int) -> String { "\(workDir)/iter_\(iteration)" }

    public func save(store: ParameterStore, momentum: Tensor, state: TrainerState) throws {
        let final = directory(iteration: state.iteration)
        let staging = "\(workDir)/.iter_\(state.iteration).tmp-\(getpid())"
        let files = FileManager.default
        try? files.removeItem(atPath: staging)
        try files.createDirectory(atPath: staging, withIntermediateDirectories: true)
        try store.saveStateDict(to: "\(staging)/\(Self.modelFile)")
        var optimizer = SafetensorsWriter()
        for p in store.parameters {
            optimizer.add(p.name, Tensor(viewOf: momentum, offset: p.offset, shape: p.shape))
        }
        try optimizer.write(to: "\(staging)/\(Self.optimizerFile)")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeFileAtomically(try encoder.encode(state), to: "\(staging)/\(Self.stateFile)")
        if files.fileExists(atPath: final) {
            // Same iteration saved again (e.g. the final save right after an interval save): replace it whole.
            let old = "\(workDir)/.iter_\(state.iteration).old-\(getpid())"
            try files.moveItem(atPath: final, toPath: old)
            try files.moveItem(atPath: staging, toPath: final)
            try? files.removeItem(atPath: old)
        } else {
            try files.moveItem(atPath: staging, toPath: final)
        }
        syncDirectory(workDir)
        try writeFileAtomically(Data((final + "\n").utf8), to: "\(workDir)/\(Self.pointerFile)")
    }

    /// The newest complete checkpoint: the one `last_checkpoint` names if it is complete, else the highest complete
    /// `iter_<N>`; nil when there is none.
    public func latest() -> String? {
        if let text = try? String(contentsOfFile: "\(workDir)/\(Self.pointerFile)", encoding: .utf8) {
            let path = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if isComplete(path) { return path }
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

    /// Deletes all but the newest `keep` checkpoints and the best one.
    public func prune(keep: Int, best: Int?) {
        let all = completeIterations()
        for n in all.dropLast(keep) where n != best {
            try? FileManager.default.removeItem(atPath: directory(iteration: n))
        }
    }

    public static func readState(_ checkpoint: String) throws -> TrainerState {
        let path = "\(checkpoint)/\(stateFile)"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CheckpointError("\(path): cannot read trainer state")
        }
        do { return try JSONDecoder().decode(TrainerState.self, from: data) } catch {
            throw CheckpointError("\(path): not a valid trainer state (\(error))")
        }
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
