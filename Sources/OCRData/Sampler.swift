import OCRTensor

/// Which sample comes next, and under which epoch's augmentation. `position` is the sample's place in the run's
/// global stream (training) or in the split (evaluation): the same whatever the rank count, so draws keyed on it
/// (dropout masks) do not depend on how the ranks share the work.
public struct SampleTicket: Equatable {
    public let epoch: Int
    public let datasetIndex: Int
    public let position: Int

    public init(epoch: Int, datasetIndex: Int, position: Int) {
        self.epoch = epoch
        self.datasetIndex = datasetIndex
        self.position = position
    }
}

/// Where the global training stream stands: `epoch` and how many samples of that epoch's permutation all ranks
/// together have consumed (0..<count). Identical on every rank, so rank 0 saves it for everyone; part of the trainer
/// state, so a resume (on any rank count) continues at the next global sample.
public struct SamplerState: Codable, Equatable {
    public var epoch: Int
    public var consumed: Int

    public init(epoch: Int = 0, consumed: Int = 0) {
        self.epoch = epoch
        self.consumed = consumed
    }

    /// Samples consumed since the start of the run; a position past the epoch (an older checkpoint, whose epochs
    /// were padded to a multiple of the ranks) starts the next epoch.
    public func absolute(count: Int) -> Int {
        consumed >= count ? (epoch + 1) * count : epoch * count + consumed
    }
}

/// The run's global sample order, as mmengine's InfiniteSampler makes it: permutations of 0..<count back to back
/// (epoch e from (seed, e); the identity without shuffle), no padding, no end.
public struct EpochPermutation: Equatable {
    public let count: Int
    public let seed: UInt64
    public let shuffle: Bool

    public init(count: Int, seed: UInt64, shuffle: Bool = true) {
        precondition(count > 0, "a sampler needs at least one sample")
        self.count = count
        self.seed = seed
        self.shuffle = shuffle
    }

    /// Fisher–Yates from (seed, epoch).
    public func order(epoch: Int) -> [Int] {
        var order = Array(0..<count)
        if shuffle {
            var rng = SplitMix64(seed: seed, UInt64(epoch))
            for i in stride(from: count - 1, to: 0, by: -1) {
                order.swapAt(i, Int(rng.next() % UInt64(i + 1)))
            }
        }
        return order
    }
}

/// How one optimizer step's global batch is cut: `ranks` × `accumulation` micro-batches of `batchSize` consecutive
/// samples of the global stream. Micro-step m of rank r takes group m·ranks + r, so the groups batch norm sees are
/// the same for one process with K micro-batches and K ranks (plain BN: one group; sync BN: the ranks' groups of
/// one micro-step together).
public struct StepLayout: Equatable, Codable {
    public var ranks: Int
    public var batchSize: Int
    public var accumulation: Int

    public init(ranks: Int, batchSize: Int, accumulation: Int = 1) {
        self.ranks = ranks
        self.batchSize = batchSize
        self.accumulation = accumulation
    }

    /// Samples per optimizer step over all ranks.
    public var globalBatch: Int { ranks * batchSize * accumulation }
    /// Samples per optimizer step on one rank.
    public var perRank: Int { batchSize * accumulation }

    /// The place within its step of the `i`-th sample a rank delivers within that step.
    func offsetInStep(rank: Int, _ i: Int) -> Int {
        let (microStep, j) = i.quotientAndRemainder(dividingBy: batchSize)
        return (microStep * ranks + rank) * batchSize + j
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

/// Training: this rank's share of the global stream from `start`, step by step as `layout` cuts it; batches run
/// across epoch boundaries, so no sample is dropped or repeated and every rank makes the same number of steps.
public final class TrainingSchedule: SampleSchedule {
    public let order: EpochPermutation
    public let layout: StepLayout
    public let rank: Int
    private let startPosition: Int
    private var cachedEpoch = -1
    private var cachedOrder: [Int] = []

    public init(order: EpochPermutation, layout: StepLayout, rank: Int, start: SamplerState = SamplerState()) {
        precondition(layout.ranks > 0 && (0..<layout.ranks).contains(rank), "rank \(rank) of \(layout.ranks)")
        self.order = order
        self.layout = layout
        self.rank = rank
        startPosition = start.absolute(count: order.count)
    }

    public func ticket(at position: Int) -> SampleTicket? {
        let (step, i) = position.quotientAndRemainder(dividingBy: layout.perRank)
        let global = startPosition + step * layout.globalBatch + layout.offsetInStep(rank: rank, i)
        let (epoch, index) = global.quotientAndRemainder(dividingBy: order.count)
        if epoch != cachedEpoch {
            cachedOrder = order.order(epoch: epoch)
            cachedEpoch = epoch
        }
        return SampleTicket(epoch: epoch, datasetIndex: cachedOrder[index], position: global)
    }

    /// The stream's state after the whole steps among `delivered` samples (checkpoints fall between steps).
    public func state(afterDelivering delivered: Int) -> SamplerState {
        let global = startPosition + delivered / layout.perRank * layout.globalBatch
        let (epoch, consumed) = global.quotientAndRemainder(dividingBy: order.count)
        return SamplerState(epoch: epoch, consumed: consumed)
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
        position < indices.count ? SampleTicket(epoch: 0, datasetIndex: indices[position], position: indices[position]) : nil
    }

    public func state(afterDelivering delivered: Int) -> SamplerState { SamplerState(epoch: 0, consumed: delivered) }
}
