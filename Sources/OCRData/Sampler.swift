import OCRTensor

/// Which sample comes next, and under which epoch's augmentation.
public struct SampleTicket: Equatable {
    public let epoch: Int
    public let datasetIndex: Int
}

/// Where a training stream stands: `epoch` and how many entries of that epoch's padded global order
/// (`DistributedSampler.epochOrder`) all ranks together have consumed — a multiple of the rank count, identical
/// on every rank, so rank 0 can save it for everyone. Part of the trainer state: a resume continues mid-epoch.
public struct SamplerState: Codable, Equatable {
    public var epoch: Int
    public var consumed: Int

    public init(epoch: Int = 0, consumed: Int = 0) {
        self.epoch = epoch
        self.consumed = consumed
    }
}

/// PyTorch's DistributedSampler: each epoch a permutation of 0..<count from (seed, epoch), padded by repeating its
/// head to a multiple of `ranks`; rank r takes entries r, r+p, r+2p, … so every rank has `perRank` samples and
/// runs the same number of steps.
public struct DistributedSampler: Equatable {
    public let count: Int
    public let ranks: Int
    public let rank: Int
    public let seed: UInt64
    public let shuffle: Bool

    public init(count: Int, ranks: Int, rank: Int, seed: UInt64, shuffle: Bool = true) {
        precondition(count > 0, "a sampler needs at least one sample")
        precondition(ranks > 0 && (0..<ranks).contains(rank), "rank \(rank) of \(ranks)")
        self.count = count
        self.ranks = ranks
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
    }

    public var perRank: Int { (count + ranks - 1) / ranks }

    /// The epoch's global order, length perRank·ranks: a Fisher–Yates permutation of 0..<count (identity without
    /// shuffle) followed by its first entries again (cycled when the padding exceeds `count`).
    public func epochOrder(_ epoch: Int) -> [Int] {
        var order = Array(0..<count)
        if shuffle {
            var rng = SplitMix64(seed: seed, UInt64(epoch))
            for i in stride(from: count - 1, to: 0, by: -1) {
                order.swapAt(i, Int(rng.next() % UInt64(i + 1)))
            }
        }
        let padded = perRank * ranks
        for i in count..<padded { order.append(order[i % count]) }
        return order
    }

    /// This rank's dataset indices for `epoch`.
    public func indices(epoch: Int) -> [Int] {
        let order = epochOrder(epoch)
        return Array(stride(from: rank, to: order.count, by: ranks).map { order[$0] })
    }
}

/// An endless (training) or finite (evaluation) sequence of tickets, read by position. The loader calls it under
/// its own lock, so an implementation may cache without locking.
public protocol SampleSchedule {
    /// The ticket at stream position `position` (0 = the first sample this loader delivers), nil past the end.
    func ticket(at position: Int) -> SampleTicket?
    /// The state after `delivered` samples of this rank, for checkpoints.
    func state(afterDelivering delivered: Int) -> SamplerState
}

/// Training: epochs of `sampler` back to back from `start`, forever; batches run across epoch boundaries so no
/// sample is dropped and every rank makes the same number of steps.
public final class TrainingSchedule: SampleSchedule {
    public let sampler: DistributedSampler
    public let start: SamplerState
    private var cachedEpoch = -1
    private var cachedIndices: [Int] = []

    public init(sampler: DistributedSampler, start: SamplerState = SamplerState()) {
        self.sampler = sampler
        self.start = start
    }

    /// The first position of this rank within the start epoch: a state saved with another rank count is
    /// rounded down to a whole step of this one.
    private var startOffset: Int { start.consumed / sampler.ranks }

    public func ticket(at position: Int) -> SampleTicket? {
        let absolute = startOffset + position
        let epoch = start.epoch + absolute / sampler.perRank
        if epoch != cachedEpoch {
            cachedIndices = sampler.indices(epoch: epoch)
            cachedEpoch = epoch
        }
        return SampleTicket(epoch: epoch, datasetIndex: cachedIndices[absolute % sampler.perRank])
    }

    public func state(afterDelivering delivered: Int) -> SamplerState {
        let absolute = startOffset + delivered
        return SamplerState(epoch: start.epoch + absolute / sampler.perRank,
                            consumed: (absolute % sampler.perRank) * sampler.ranks)
    }
}

/// Evaluation: rank r takes r, r+p, r+2p, … < count, no padding, so over all ranks every sample is counted
/// exactly once (ranks may differ by one sample; evaluation has no collective per step).
public struct EvaluationSchedule: SampleSchedule {
    public let indices: [Int]

    public init(count: Int, ranks: Int, rank: Int) {
        precondition(ranks > 0 && (0..<ranks).contains(rank), "rank \(rank) of \(ranks)")
        indices = Array(stride(from: rank, to: count, by: ranks))
    }

    public func ticket(at position: Int) -> SampleTicket? {
        position < indices.count ? SampleTicket(epoch: 0, datasetIndex: indices[position]) : nil
    }

    public func state(afterDelivering delivered: Int) -> SamplerState { SamplerState(epoch: 0, consumed: delivered) }
}
