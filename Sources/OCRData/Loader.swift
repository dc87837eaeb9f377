import Foundation
import OCRTensor

/// One batch as the model takes it.
public struct Batch {
    /// N×3×H×W, normalised, padded (pad value in normalised units) to the largest sample or the pad size.
    public let images: Tensor
    /// N×H×W train ids, padded with 255. In training the labels went through the pipeline with their images; in
    /// evaluation they are at their original size (H×W of the labels may then differ from the images').
    public let labels: LabelMap
    public let tickets: [SampleTicket]
    /// Per sample, with test-time augmentation: every view of its decoded image (empty lists otherwise).
    public let views: [[TestTimeAugmentation.View]]
    /// Per sample: its file name stem (for prediction outputs), its image size and label size before padding.
    public let names: [String]
    public let imageSizes: [(height: Int, width: Int)]
    public let labelSizes: [(height: Int, width: Int)]
    /// The sampler position after this batch (save it with a checkpoint taken after this step).
    public let state: SamplerState
}

public enum LoaderMode: Equatable {
    /// Labels follow their images through the pipeline.
    case training
    /// Only images go through the pipeline (an evaluation Resize); labels keep their original size.
    case evaluation
    /// As evaluation, but each image becomes the augmentation's views of the decoded image (mmseg's tta_pipeline
    /// replaces the test pipeline); the batch's `images` hold the first view.
    case testTimeAugmentation(TestTimeAugmentation)
}

/// Decodes and augments samples on background threads, ahead of the consumer, into a bounded buffer
/// (`prefetchBatches` batches beyond the one being assembled), and hands out batches in schedule order whatever
/// order the workers finish in. A sample that fails to load surfaces as the `DataError` of `next()` for the
/// batch that contains it. The workers stop when the loader is released (or at `stop()`).
public final class PrefetchLoader {
    public var batchSize: Int { core.batchSize }
    private let core: PrefetchCore

    public init(dataset: SegmentationDataset, pipeline: Pipeline, schedule: SampleSchedule, batchSize: Int,
                seed: UInt64, mode: LoaderMode, workers: Int = 1, prefetchBatches: Int = 2) {
        precondition(batchSize > 0 && workers > 0 && prefetchBatches >= 0)
        core = PrefetchCore(dataset: dataset, pipeline: pipeline, schedule: schedule, batchSize: batchSize,
                            seed: seed, mode: mode, capacity: batchSize * (prefetchBatches + 1))
        for worker in 0..<workers {
            core.finished.enter()
            // The thread holds the core, not the loader, so releasing the loader can stop it.
            let thread = Thread { [core] in
                core.work()
                core.finished.leave()
            }
            thread.name = "ocr-ddp data \(worker)"
            thread.start()
        }
    }

    deinit { core.stop() }

    /// The next batch in schedule order (shorter at the end of a finite schedule), nil when the schedule is
    /// exhausted; rethrows a sample's load error.
    public func next() throws -> Batch? { try core.next() }

    /// Stops the workers after their current sample and waits for them.
    public func stop() { core.stop() }
}

/// The loader's shared state and its worker and consumer sides.
private final class PrefetchCore: @unchecked Sendable {
    let batchSize: Int
    let dataset: SegmentationDataset
    let pipeline: Pipeline
    let schedule: SampleSchedule
    let seed: UInt64
    let mode: LoaderMode
    let capacity: Int
    let finished = DispatchGroup()

    /// Guards everything below; workers wait on it for room, the consumer for results.
    private let condition = NSCondition()
    private var nextToClaim = 0
    private var delivered = 0
    private var end = Int.max
    private var ready: [Int: Result<PreparedSample, Error>] = [:]
    private var stopping = false

    struct PreparedSample {
        let ticket: SampleTicket
        let name: String
        let image: Tensor // 3×h×w normalised
        let label: LabelImage
        let views: [TestTimeAugmentation.View]
    }

    init(dataset: SegmentationDataset, pipeline: Pipeline, schedule: SampleSchedule, batchSize: Int, seed: UInt64,
         mode: LoaderMode, capacity: Int) {
        self.dataset = dataset
        self.pipeline = pipeline
        self.schedule = schedule
        self.batchSize = batchSize
        self.seed = seed
        self.mode = mode
        self.capacity = capacity
    }

    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
        finished.wait()
    }

    func work() {
        while true {
            condition.lock()
            while !stopping && (nextToClaim - delivered >= capacity || nextToClaim >= end) { condition.wait() }
            if stopping {
                condition.unlock()
                return
            }
            let position = nextToClaim
            nextToClaim += 1
            let ticket = schedule.ticket(at: position)
            if ticket == nil { end = min(end, position) }
            condition.unlock()
            guard let ticket else {
                condition.lock()
                condition.broadcast()
                condition.unlock()
                continue
            }
            let result = Result { try prepare(ticket) }
            condition.lock()
            ready[position] = result
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Decode, augment, normalise one sample (runs on a worker thread).
    func prepare(_ ticket: SampleTicket) throws -> PreparedSample {
        let (image, label) = try dataset.load(ticket.datasetIndex)
        let name = dataset.samples[ticket.datasetIndex].name
        if case .testTimeAugmentation(let augmentation) = mode {
            let views = augmentation.views(of: image, normalization: pipeline.normalization)
            return PreparedSample(ticket: ticket, name: name, image: views[0].image, label: label, views: views)
        }
        let input = AugmentedSample(image: image, label: mode == .training ? label : nil)
        let output = pipeline.apply(input, seed: seed, epoch: ticket.epoch, sampleIndex: ticket.datasetIndex)
        return PreparedSample(ticket: ticket, name: name, image: pipeline.normalization.planes(output.image),
                              label: output.label ?? label, views: [])
    }

    func next() throws -> Batch? {
        var samples: [PreparedSample] = []
        condition.lock()
        defer { condition.unlock() }
        while samples.count < batchSize {
            while ready[delivered] == nil && delivered < end && !stopping { condition.wait() }
            guard let result = ready.removeValue(forKey: delivered) else { break }
            delivered += 1
            condition.broadcast()
            samples.append(try result.get())
        }
        guard !samples.isEmpty else { return nil }
        return collate(samples, state: schedule.state(afterDelivering: delivered))
    }

    /// Pads and stacks prepared samples (images with the pad value, labels with 255).
    private func collate(_ samples: [PreparedSample], state: SamplerState) -> Batch {
        let n = samples.count
        let height = max(samples.map { $0.image.shape[1] }.max()!, pipeline.padSize?.height ?? 0)
        let width = max(samples.map { $0.image.shape[2] }.max()!, pipeline.padSize?.width ?? 0)
        let images = Tensor(zeros: [n, 3, height, width])
        if pipeline.padValue != 0 { images.fill(pipeline.padValue) }
        for (i, sample) in samples.enumerated() {
            let h = sample.image.shape[1], w = sample.image.shape[2]
            for c in 0..<3 {
                for y in 0..<h {
                    (images.data + ((i * 3 + c) * height + y) * width)
                        .update(from: sample.image.data + (c * h + y) * w, count: w)
                }
            }
        }
        let labelHeight = mode == .training ? height : samples.map { $0.label.height }.max()!
        let labelWidth = mode == .training ? width : samples.map { $0.label.width }.max()!
        var labels = [Int32](repeating: Int32(pipeline.labelPadValue), count: n * labelHeight * labelWidth)
        labels.withUnsafeMutableBufferPointer { out in
            for (i, sample) in samples.enumerated() {
                let label = sample.label
                label.values.withUnsafeBufferPointer { values in
                    for y in 0..<label.height {
                        let row = out.baseAddress! + (i * labelHeight + y) * labelWidth
                        let source = values.baseAddress! + y * label.width
                        for x in 0..<label.width { row[x] = Int32(source[x]) }
                    }
                }
            }
        }
        return Batch(images: images, labels: LabelMap(shape: [n, labelHeight, labelWidth], values: labels),
                     tickets: samples.map(\.ticket), views: samples.map(\.views), names: samples.map(\.name),
                     imageSizes: samples.map { ($0.image.shape[1], $0.image.shape[2]) },
                     labelSizes: samples.map { ($0.label.height, $0.label.width) }, state: state)
    }
}
