import ArgumentParser
import Foundation
import OCRDistributed
import OCRModel
import OCRNN
import OCRTensor
import OCRTrain

/// A few SGD steps of a small OCRNet on deterministic random samples, sharded over the ranks exactly as stated by
/// --rank-batches, then the weights (rank 0, or every rank with --dump-every-rank) and the per-step losses written
/// to --out. Used by the distributed tests: p ranks on split batches must equal one process on the whole batch.
struct DDPCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ddp-check",
        abstract: "Train a small OCRNet for a few steps on deterministic data and dump weights (distributed tests).",
        shouldDisplay: false)

    @Option(help: "Output directory.") var out: String
    @Option(help: "Per-rank batch sizes, comma separated, one entry per rank (e.g. 1,1 or 2,0).")
    var rankBatches: String
    @Option var steps = 3
    @Option(help: "Micro-batches accumulated per step (communication on the last only).") var accumulate = 1
    @Option var depth = 18
    @Option var baseChannels = 8
    @Option var classes = 5
    @Option(help: "FCN head channels (default 4 × base).") var fcnChannels: Int?
    @Option(help: "OCR head channels (default 4 × base).") var ocrChannels: Int?
    @Option(help: "OCR attention channels (default 2 × base).") var ocrMidChannels: Int?
    @Option var height = 32
    @Option var width = 32
    @Option var lr: Float = 0.05
    @Option var momentum: Float = 0.9
    @Option var weightDecay: Float = 0.0005
    @Option(help: "Size of the first gradient bucket, KiB.") var firstBucketKib = 1024
    @Option(help: "Size of the other gradient buckets, KiB.") var bucketKib = 25 * 1024
    @Option(help: "How gradient all-reduces overlap backward: thread (blocking MPI on a communication thread) or polling (MPI_Iallreduce progressed by MPI_Test between layers).")
    var overlap: GradientSynchronizer.Overlap = .polling
    @Option(help: "What gradient buckets are sent as: fp32 or bf16 (summed in fp32).")
    var gradientPayload: GradientCommunication.Payload = .fp32
    @Option(help: "flat, or hierarchical (inside each machine first).") var allreduce: GradientCommunication.Topology = .flat
    @Flag(inversion: .prefixedNo, help: "Synchronise batch-norm statistics across ranks.") var syncBn = true
    @Flag(help: "Every rank writes rank<r>.safetensors.") var dumpEveryRank = false
    @Option(help: "After training, evaluate on this many samples split over the ranks (each counted once).")
    var evalSamples = 0
    @Option(help: "Fault injection for the drift guard: this rank nudges one weight after the first step.")
    var perturbRank: Int?
    @Option var seed: UInt64 = 0
    @Option(help: "BLAS threads per rank.") var threads = 1

    func run() throws {
        let communication = GradientCommunication(overlap: overlap, payload: gradientPayload, topology: allreduce,
                                                  firstBucketBytes: firstBucketKib * 1024, bucketBytes: bucketKib * 1024)
        let comm = try Launcher.start(threads: communication.threadSupport)
        defer { MPICommunicator.finalize() }
        BLAS.setThreads(threads)
        let batches = rankBatches.split(separator: ",").compactMap { Int($0) }
        guard batches.count == comm.size else {
            throw ValidationError("--rank-batches lists \(batches.count) ranks but \(comm.size) are running")
        }
        var config = ModelConfig()
        config.depth = depth; config.baseChannels = baseChannels; config.numClasses = classes
        config.fcnChannels = fcnChannels ?? 4 * baseChannels
        config.ocrChannels = ocrChannels ?? 4 * baseChannels
        config.ocrMidChannels = ocrMidChannels ?? 2 * baseChannels
        config.fcnDropout = 0; config.ocrDropout = 0
        config.residualBNInit = 0.1
        // Rank r ≠ 0 starts from other weights on purpose: the broadcast from rank 0 must overwrite them.
        let model = OCRNet(config: config, seed: seed &+ UInt64(comm.rank))
        let sgd = SGD(store: model.store, learningRate: lr, momentum: momentum, weightDecay: weightDecay)
        let ddp = try DataParallel(model: model, comm: comm, syncBatchNorm: syncBn, optimizer: sgd,
                                   communication: communication)
        let globalBatch = batches.reduce(0, +)
        let myStart = batches[..<comm.rank].reduce(0, +)
        let myCount = batches[comm.rank]
        var losses: [[Float]] = []
        var timings: [DataParallel.Timing] = []
        for step in 0..<steps {
            var micro: [DataParallel.MicroBatch] = []
            for m in 0..<accumulate {
                let first = (step * accumulate + m) * globalBatch + myStart
                let sample = sampleBatch(globalIndices: first..<(first + myCount))
                micro.append((sample.images, sample.labels, (first..<(first + myCount)).map(UInt64.init)))
            }
            let l = ddp.step(micro)
            losses.append([l.total, l.aux, l.ocr])
            timings.append(ddp.lastTiming)
            if perturbRank == comm.rank && step == 0 { model.store.values[0] += 1e-3 }
            try ReplicaConsistency.checkWeightsAgree(model.store, comm: comm, iteration: step + 1)
        }
        var counts = SegmentationCounts(numClasses: classes)
        // Evaluation split: rank r takes r, r+p, … — no padding, so every sample is counted exactly once.
        for g in stride(from: comm.rank, to: evalSamples, by: comm.size) {
            let sample = sampleBatch(globalIndices: (1_000_000 + g)..<(1_000_001 + g))
            let prediction = model.predict(sample.images, height: height, width: width)
            counts.add(prediction: prediction.values, label: sample.labels.values)
        }
        counts.reduce(over: comm)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        if dumpEveryRank { try model.store.saveStateDict(to: "\(out)/rank\(comm.rank).safetensors") }
        if comm.isRoot {
            try model.store.saveStateDict(to: "\(out)/model.safetensors")
            let report: [String: Any] = [
                "losses": losses.map { $0.map(Double.init) },
                "buckets": ddp.synchronizer.buckets.count,
                "eval": ["intersect": counts.intersect, "union": counts.union, "labelled": counts.labelled,
                         "mIoU": counts.metrics.mIoU ?? -1],
                "ms": timings.map { ["forward_backward": $0.forwardBackward * 1e3, "allreduce": $0.allreduce * 1e3,
                                     "allreduce_exposed": $0.allreduceExposed * 1e3, "optimizer": $0.optimizer * 1e3] },
            ]
            let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
            try data.write(to: URL(fileURLWithPath: "\(out)/report.json"))
        }
    }

    /// Images N(0,1) and labels from a fixed stream per global sample index, so a sample is the same whichever rank
    /// holds it. No ignored pixels: every image has the same pixel count, so the mean of per-rank mean losses equals
    /// the whole-batch mean (DDP averages per-rank gradients; with unequal counts the two differ by design).
    func sampleBatch(globalIndices: Range<Int>) -> (images: Tensor, labels: LabelMap) {
        let n = globalIndices.count
        let images = Tensor(zeros: [n, 3, height, width])
        var labels = [Int32](repeating: 0, count: n * height * width)
        for (i, g) in globalIndices.enumerated() {
            var rng = SplitMix64(seed: seed &+ 1000, UInt64(g))
            let plane = 3 * height * width
            for j in 0..<plane { images[i * plane + j] = Float(rng.normal()) }
            // Blocky labels (4×4 cells) so the task has spatial structure.
            for y in 0..<height {
                for x in 0..<width {
                    var cell = SplitMix64(seed: UInt64(g), UInt64(y / 4), UInt64(x / 4))
                    labels[(i * height + y) * width + x] = Int32(cell.next() % UInt64(classes))
                }
            }
        }
        return (images, LabelMap(shape: [n, height, width], values: labels))
    }
}

extension GradientSynchronizer.Overlap: ExpressibleByArgument {}
extension GradientCommunication.Payload: ExpressibleByArgument {}
extension GradientCommunication.Topology: ExpressibleByArgument {}
