import Foundation
import OCRDistributed
import OCRModel
import OCRNN
import OCRTensor

/// One data-parallel replica: the model, its optimizer, and the DDP machinery around them. Construction makes the
/// ranks agree (same layout, rank 0's weights and buffers); `step` runs forward/backward over the micro-batches
/// (gradients accumulate, communication only on the last), averages gradients across ranks and updates weights.
public final class DataParallel {
    public let model: OCRNet
    public let comm: Communicator
    public let optimizer: SGD
    public let synchronizer: GradientSynchronizer

    /// Wall-clock split of the last step, in seconds: forward (with the losses) and backward summed over the
    /// micro-batches, backward without the time it waited for gradient buckets (`allreduceExposed`), and the
    /// optimizer update. `allreduce` is the buckets' whole communication time, most of it hidden under backward.
    public struct Timing: Codable {
        public var forward = 0.0
        public var backward = 0.0
        public var allreduce = 0.0
        public var allreduceExposed = 0.0
        public var optimizer = 0.0
        public var forwardBackward: Double { forward + backward }
    }
    public private(set) var lastTiming = Timing()

    public init(model: OCRNet, comm: Communicator, syncBatchNorm: Bool = true, optimizer: SGD,
                communication: GradientCommunication = .init()) throws {
        self.model = model
        self.comm = comm
        self.optimizer = optimizer
        if syncBatchNorm && comm.size > 1 { model.store.reducer = SyncBatchNormReducer(comm: comm) }
        try ReplicaConsistency.checkLayout(model.store, comm: comm)
        ReplicaConsistency.broadcastState(model.store, comm: comm)
        synchronizer = GradientSynchronizer(store: model.store, comm: comm, communication: communication)
    }

    /// One micro-batch of a rank: images N×3×H×W, labels N×H×W, and the samples' global stream positions that key
    /// their dropout masks (nil: the model counts its own forwards).
    public typealias MicroBatch = (images: Tensor, labels: LabelMap, sampleKeys: [UInt64]?)

    /// One optimizer step over `microBatches` (this rank's share; a rank may hold an empty batch). Returns the loss
    /// terms averaged over micro-batches and over the ranks that had data.
    @discardableResult
    public func step(_ microBatches: [MicroBatch]) -> Losses {
        precondition(!microBatches.isEmpty, "a step needs at least one micro-batch")
        let clock = { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
        model.store.zeroGrad()
        var sums = [0.0, 0.0, 0.0, 0.0]   // total, aux, ocr, micro-batches with data
        let start = clock()
        var forwardSeconds = 0.0
        for (i, batch) in microBatches.enumerated() {
            if i == microBatches.count - 1 { synchronizer.beginSynchronizedBackward(microBatches: microBatches.count) }
            let forwardStart = clock()
            model.forward(batch.images, sampleKeys: batch.sampleKeys)
            let losses = model.loss(batch.labels)
            forwardSeconds += clock() - forwardStart
            model.backward()
            if batch.images.shape[0] > 0 {
                sums[0] += Double(losses.total); sums[1] += Double(losses.aux); sums[2] += Double(losses.ocr)
                sums[3] += 1
            }
        }
        synchronizer.finish()
        let afterBackward = clock()
        optimizer.step()
        lastTiming = Timing(forward: forwardSeconds,
                            backward: afterBackward - start - forwardSeconds - synchronizer.exposedSeconds,
                            allreduce: synchronizer.allreduceSeconds,
                            allreduceExposed: synchronizer.exposedSeconds, optimizer: clock() - afterBackward)
        sums.withUnsafeMutableBufferPointer { comm.allreduceSum($0, phase: "loss averaging") }
        let n = max(sums[3], 1)
        return Losses(total: Float(sums[0] / n), aux: Float(sums[1] / n), ocr: Float(sums[2] / n))
    }
}
