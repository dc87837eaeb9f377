import ArgumentParser
import Foundation
import OCRDistributed
import OCRModel
import OCRNN
import OCRTensor
import OCRTrain

/// `ocr-ddp bench`: timed training steps (forward, both losses, backward, gradient all-reduce, SGD) on random
/// tensors of the configured crop — no dataset — under any rank count; prints the JSON line of docs/INTERFACE.md last.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time training iterations on random data of the config's crop and print one JSON line.")

    @Argument(help: "YAML config (default: the built-in quick-start config).") var config: String?
    @Option(help: "Timed iterations (after warm-up).") var iters = 10
    @Option(help: "Warm-up iterations, not timed.") var warmup = 2
    @Option(help: "Crop HxW (default: the config's RandomCrop crop_size, or its Resize scale).") var crop: String?
    @Flag(help: "Print rank 0's time per kind of work (conv GEMMs, im2col, batch norm, …) over the timed steps.")
    var profile = false
    @Option(help: "How gradient all-reduces overlap backward (default: the config's model_wrapper_cfg.overlap, polling): polling (nonblocking collectives progressed between layers) or thread (blocking MPI on a communication thread, whose allreduce phase is then the buckets' transfer time).")
    var overlap: GradientSynchronizer.Overlap?
    @OptionGroup var amp: AmpOption
    @OptionGroup var options: ConfigOptions

    func cropSize(_ experiment: ExperimentConfig) throws -> (Int, Int) {
        if let crop {
            let parts = crop.lowercased().split(separator: "x").compactMap { Int($0) }
            guard parts.count == 2, parts.allSatisfy({ $0 >= 8 }) else {
                throw ConfigError("--crop '\(crop)': expected HxW, e.g. 512x1024")
            }
            return (parts[0], parts[1])
        }
        // The training size: the RandomCrop crop_size, else the scale of a fixed Resize.
        for case .randomCrop(let t) in experiment.data.trainPipeline.transforms {
            return (t.cropSize.height, t.cropSize.width)
        }
        for case .resize(let t) in experiment.data.trainPipeline.transforms {
            return (t.scale.height, t.scale.width)
        }
        throw ConfigError("the config has no RandomCrop crop_size or Resize scale: give --crop HxW")
    }

    func run() throws {
        guard iters >= 1 && warmup >= 0 else { throw ConfigError("--iters \(iters) --warmup \(warmup): need iters ≥ 1, warmup ≥ 0") }
        var experiment = try options.load(config, amp: amp)
        if let overlap { experiment.gradientCommunication.overlap = overlap }
        let communication = experiment.gradientCommunication
        let (h, w) = try cropSize(experiment)
        try withProcessGroup(timeout: experiment.distTimeout, threads: communication.threadSupport) { comm in
            let model = OCRNet(config: experiment.model, seed: experiment.seed)
            let (precision, precisionNote) = experiment.availablePrecision
            model.store.trainingPrecision = precision
            if let precisionNote, comm.isRoot { FileHandle.standardError.write(Data("warning: \(precisionNote)\n".utf8)) }
            let sgd = SGD(store: model.store, learningRate: Float(experiment.learningRate),
                          momentum: Float(experiment.momentum), weightDecay: Float(experiment.weightDecay))
            let ddp = try DataParallel(model: model, comm: comm, syncBatchNorm: experiment.syncBN, optimizer: sgd,
                                       communication: communication)
            let n = experiment.data.batchSize
            var rng = SplitMix64(seed: 7, UInt64(comm.rank))
            // Two random batches, taken in turn; each step first copies its batch into the input tensors, as the
            // trainer's collation does, and that copy is the "data" phase (the loader's decoding and augmentation
            // run on its own threads, so they are not part of a step).
            let pool = (0..<2).map { _ in
                (images: (0..<(n * 3 * h * w)).map { _ in Float(rng.normal()) },
                 labels: (0..<(n * h * w)).map { _ in Int32(rng.next() % UInt64(experiment.model.numClasses)) })
            }
            let images = Tensor(zeros: [n, 3, h, w])
            var labels = LabelMap(shape: [n, h, w], values: [])
            func nextBatch(_ step: Int) {
                let batch = pool[step % pool.count]
                batch.images.withUnsafeBufferPointer { images.data.update(from: $0.baseAddress!, count: $0.count) }
                labels = LabelMap(shape: [n, h, w], values: batch.labels)
            }
            var timings: [DataParallel.Timing] = []
            var stepSeconds: [Double] = [], dataSeconds: [Double] = []
            for i in 0..<(warmup + iters) {
                if i == warmup { Profiler.reset(); Profiler.enabled = true }
                let start = Date()
                nextBatch(i)
                let drawn = Date()
                ddp.step([(images, labels, nil)])
                if i >= warmup {
                    stepSeconds.append(Date().timeIntervalSince(start))
                    dataSeconds.append(drawn.timeIntervalSince(start))
                    timings.append(ddp.lastTiming)
                }
            }
            Profiler.enabled = false
            let profileRows = Profiler.report
            let profiledSteps = Double(iters)
            // Convolution and matrix-product FLOPs of one forward, counted over the timed steps.
            let forwardFlops = Profiler.forwardFlops / profiledSteps
            // The machine's GEMM rate as this run uses it: every rank at once with its own threads, summed.
            comm.barrier(phase: "sgemm rate start")
            var rates = [sgemmRate(repeats: 3), precision == .bfloat16 ? gemmRate(repeats: 3, precision: precision) : 0]
            rates.withUnsafeMutableBufferPointer { comm.allreduceSum($0, phase: "GEMM rates") }
            func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
            let step = median(stepSeconds)
            // Peak RSS is reported per rank (the largest), as the budget that matters is one rank's.
            let peakRSS = comm.maximum(peakResidentMB(), phase: "peak RSS")
            let batchNormChannels = model.store.entries.compactMap { entry -> Int? in
                guard case .buffer(let b) = entry, b.name.hasSuffix(".running_mean") else { return nil }
                return b.value.count
            }
            guard comm.isRoot else { return }
            if profile {
                print("profile of rank 0, ms per step over \(iters) steps (exclusive time):")
                for row in profileRows {
                    print(row.name.padding(toLength: 32, withPad: " ", startingAt: 0)
                          + String(format: "%9.1f ms %7.1f calls", row.seconds * 1e3 / profiledSteps,
                                   Double(row.calls) / profiledSteps))
                }
            }
            var result: [String: Any] = [
                "img_per_s": Double(n * comm.size) / step, "ms_per_step": step * 1e3, "ranks": comm.size,
                "threads_per_rank": BLAS.threads, "batch_per_rank": n, "crop": [h, w],
                "peak_rss_mb": peakRSS, "openblas_core": BLAS.coreName,
                "precision": precision.rawValue,
                "overlap": communication.overlap.rawValue, "gradient_payload": communication.payload.rawValue,
                "allreduce": ddp.synchronizer.topology.rawValue,
                "mpi_threads": (comm as? MPICommunicator)?.threadSupport.rawValue ?? "none",
                // Each synchronises its statistics in forward (an allgather of every rank's per-channel count, mean
                // and M2) and its sums in backward (sync BN's collectives), for the scaling model.
                "batch_norm_layers": batchNormChannels.count, "batch_norm_channels": batchNormChannels.reduce(0, +),
                // 3 × forward GEMM work (forward, input and weight gradients) over all ranks per second.
                "forward_gflop_per_rank": forwardFlops / 1e9,
                "effective_gflops": 3 * forwardFlops * Double(comm.size) / step / 1e9,
                "sgemm_gflops": rates[0],
                // What one step all-reduces (fp32 gradients), for bandwidth: a ring moves 2(p−1)/p of it per rank.
                "gradient_mb": Double(ddp.synchronizer.buckets.map(\.range.count).reduce(0, +)) * 4 / 1e6,
                // Medians over the timed steps, each phase on its own (they need not add up to the median step).
                "phases": ["data": median(dataSeconds) * 1e3, "forward": median(timings.map(\.forward)) * 1e3,
                           "backward": median(timings.map(\.backward)) * 1e3,
                           "allreduce": median(timings.map(\.allreduce)) * 1e3,
                           "allreduce_exposed": median(timings.map(\.allreduceExposed)) * 1e3,
                           "optimizer": median(timings.map(\.optimizer)) * 1e3],
            ]
            if precision == .bfloat16 {
                result["bf16_gemm_gflops"] = rates[1]
                result["bf16_kernel"] = BF16.kernelName
            }
            let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: json, as: UTF8.self))
        }
    }
}
