import Foundation
import OCRData

/// How a run cuts its global batch (ranks × batch × accumulation, the samples one optimizer step averages over)
/// over the ranks it has. A fresh run takes the config's batch and accumulation. A run resumed on another rank count
/// keeps the checkpoint's global batch and what batch norm normalises over, choosing the per-rank batch and the
/// accumulation itself (README "Changing the number of ranks").
public struct ElasticPlan: Equatable {
    public var layout: StepLayout
    /// What was chosen and why, for the log; nil when the config's layout runs as it is.
    public var note: String?

    /// - config: the config's batch and accumulation on this run's ranks.
    /// - saved: the layout of the run that wrote the checkpoint (nil: a fresh run, or a checkpoint without one).
    /// - syncBN: batch norm normalises over all ranks' micro-batches of one micro-step (else one rank's).
    /// - autoScaleLR: whether `auto_scale_lr` is on, so that the global batch may change with the LR following it.
    /// - fits: whether a per-rank batch of this many images fits in this rank's memory.
    public static func choose(config: StepLayout, saved: StepLayout?, syncBN: Bool, autoScaleLR: Bool,
                              fits: (Int) -> Bool) throws -> ElasticPlan {
        guard let saved, saved != config else { return ElasticPlan(layout: config, note: nil) }
        let global = saved.globalBatch
        if (config.batchSize, config.accumulation) != (saved.batchSize, saved.accumulation) {
            // The config was edited: its batch is the user's choice, whatever it does to the global batch.
            let change = config.globalBatch == global ? "keeps the global batch \(global)"
                : "changes the global batch from \(global) to \(config.globalBatch)"
                    + (autoScaleLR ? " (auto_scale_lr scales the LR with it)" : "")
            return ElasticPlan(layout: config, note: "the config's batch \(config.batchSize) × accumulation "
                               + "\(config.accumulation) differs from the checkpoint's; \(describe(config)) \(change)")
        }
        let ranks = config.ranks
        guard global % ranks == 0 else {
            guard autoScaleLR else {
                let working = (1...global).filter { global % $0 == 0 }.map(String.init).joined(separator: ", ")
                throw ConfigError("the checkpoint's global batch \(global) (\(describe(saved))) cannot be split over "
                                  + "\(ranks) ranks: resume on \(working) ranks, or set auto_scale_lr: {enable: true, "
                                  + "base_batch_size: \(global)} to train on with global batch \(config.globalBatch) "
                                  + "and the LR scaled to it")
            }
            return ElasticPlan(layout: config, note: "the checkpoint's global batch \(global) cannot be split over "
                               + "\(ranks) ranks; \(describe(config)) is global batch \(config.globalBatch), LR scaled "
                               + "by auto_scale_lr")
        }
        let perRank = global / ranks
        let normalised = syncBN ? saved.ranks * saved.batchSize : saved.batchSize
        // Sync BN normalises over ranks × batch, plain BN over one rank's batch: the batch that keeps it.
        let keeping = syncBN ? (normalised % ranks == 0 ? normalised / ranks : nil) : normalised
        if let keeping, perRank % keeping == 0, fits(keeping) {
            let layout = StepLayout(ranks: ranks, batchSize: keeping, accumulation: perRank / keeping)
            return ElasticPlan(layout: layout, note: "the checkpoint ran \(describe(saved)); \(describe(layout)) "
                               + "keeps its global batch \(global) and batch norm over \(normalised) images")
        }
        // The largest batch that divides the rank's share, fits, and does not exceed the one that would keep BN.
        let limit = keeping ?? perRank
        let batch = (1...perRank).reversed().first { perRank % $0 == 0 && $0 <= limit && fits($0) } ?? 1
        let layout = StepLayout(ranks: ranks, batchSize: batch, accumulation: perRank / batch)
        let now = syncBN ? ranks * batch : batch
        let why: String
        if let keeping {
            why = perRank % keeping != 0 ? "\(keeping) per rank does not divide the rank's \(perRank) samples"
                : "a batch of \(keeping) per rank does not fit in memory"
        } else {
            why = "\(normalised) images do not split evenly over \(ranks) ranks"
        }
        return ElasticPlan(layout: layout, note: "the checkpoint ran \(describe(saved)); \(describe(layout)) keeps its "
                           + "global batch \(global), but batch norm now normalises over \(now) images instead of "
                           + "\(normalised): \(why)")
    }

    static func describe(_ layout: StepLayout) -> String {
        "\(layout.ranks) rank(s) × batch \(layout.batchSize)"
            + (layout.accumulation > 1 ? " × \(layout.accumulation) accumulated" : "")
    }
}

/// Whether `batch` images per rank fit, judged from the peak memory the checkpointing run measured with
/// `savedBatch`: memory grows in proportion to the batch (activations dominate), against the memory this node has
/// available shared by its ranks. Unknown peaks are assumed to fit.
public func batchFitsInMemory(_ batch: Int, savedBatch: Int, savedPeakMB: Double?, ranksOnNode: Int) -> Bool {
    guard batch > savedBatch, let savedPeakMB, let available = availableMemoryMB() else { return true }
    return savedPeakMB * Double(batch) / Double(savedBatch) <= 0.9 * available / Double(max(ranksOnNode, 1))
}

/// MemAvailable of /proc/meminfo in MB (nil where there is none).
func availableMemoryMB() -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
          let kB = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { return nil }
    return kB / 1024
}
