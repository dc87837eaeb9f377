import ArgumentParser
import Foundation
import OCRDistributed
import OCRModel
import OCRNN
import OCRTensor
import OCRTrain

/// `ocr-ddp bench`: timed training steps (forward, both losses, backward, gradient all-reduce, SGD) on random
/// tensors of the configured crop — no dataset — under any rank count; prints the JSON line of INTERFACE.md last.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time training iterations on random data of the config's crop and print one JSON line.")

    @Argument(help: "YAML config (default: the built-in quick-start config).") var config: String?
    @Option(help: "Timed iterations (after warm-up).") var iters = 10
    @Option(help: "Warm-up iterations, not timed.") var warmup = 2
    @Option(help: "Crop HxW (default: the config's RandomCrop crop_size, or its Resize scale).") var crop: String?
    @Flag(help: "Print rank 0's time per kind of work (conv GEMMs, im2col, batch norm, …) over the timed steps.")
    var profile = false
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
        let experiment = try options.load(config)
        let (h, w) = try cropSize(experiment)
        try withProcessGroup(timeout: experiment.distTimeout) { comm in
            let model = OCRNet(config: experiment.model, seed: experiment.seed)
            let sgd = SGD(store: model.store, learningRate: Float(experiment.learningRate),
                          momentum: Float(experiment.momentum), weightDecay: Float(experiment.weightDecay))
            let ddp = try DataParallel(model: model, comm: comm, syncBatchNorm: experiment.syncBN, optimizer: sgd)
            let n = experiment.data.batchSize
            var rng = SplitMix64(seed: 7, UInt64(comm.rank))
            let images = Tensor(zeros: [n, 3, h, w])
            for i in 0..<images.count { images[i] = Float(rng.normal()) }
            let labels = LabelMap(shape: [n, h, w], values: (0..<(n * h * w)).map { _ in
                Int32(rng.next() % UInt64(experiment.model.numClasses))
            })
            var timings: [DataParallel.Timing] = []
            var stepSeconds: [Double] = []
            for i in 0..<(warmup + iters) {
                if i == warmup && profile { Profiler.reset(); Profiler.enabled = true }
                let start = Date()
                ddp.step([(images, labels)])
                if i >= warmup {
                    stepSeconds.append(Date().timeIntervalSince(start))
                    timings.append(ddp.lastTiming)
                }
            }
            let profileRows = Profiler.report
            let profiledSteps = Double(iters)
            // Per-step phases: forward and backward are split by timing one forward alone after the run; the same
            // forward counts the convolution and matrix-product FLOPs.
            Profiler.reset()
            Profiler.enabled = true
            let forwardStart = Date()
            model.forward(images)
            let forwardSeconds = Date().timeIntervalSince(forwardStart)
            Profiler.enabled = false
            let forwardFlops = Profiler.forwardFlops
            // The machine's GEMM rate as this run uses it: every rank at once with its own threads, summed.
            comm.barrier(phase: "sgemm rate start")
            var sgemm = [sgemmRate(repeats: 3)]
            sgemm.withUnsafeMutableBufferPointer { comm.allreduceSum($0, phase: "sgemm rate") }
            func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
            let step = median(stepSeconds)
            // Peak RSS is reported per rank (the largest), as the budget that matters is one rank's.
            let ownRSS = [peakResidentMB()]
            var all = [Double](repeating: 0, count: comm.size)
            ownRSS.withUnsafeBufferPointer { send in all.withUnsafeMutableBufferPointer { comm.allgather(send, into: $0, phase: "peak RSS") } }
            guard comm.isRoot else { return }
            if profile {
                print("profile of rank 0, ms per step over \(iters) steps (exclusive time):")
                for row in profileRows {
                    print(row.name.padding(toLength: 32, withPad: " ", startingAt: 0)
                          + String(format: "%9.1f ms %7.1f calls", row.seconds * 1e3 / profiledSteps,
                                   Double(row.calls) / profiledSteps))
                }
            }
            let forwardBackward = median(timings.map(\.forwardBackward))
            let result: [String: Any] = [
                "img_per_s": Double(n * comm.size) / step, "ms_per_step": step * 1e3, "ranks": comm.size,
                "threads_per_rank": BLAS.threads, "batch_per_rank": n, "crop": [h, w],
                "peak_rss_mb": all.max() ?? 0, "openblas_core": BLAS.coreName,
                // 3 × forward GEMM work (forward, input and weight gradients) over all ranks per second.
                "forward_gflop_per_rank": forwardFlops / 1e9,
                "effective_gflops": 3 * forwardFlops * Double(comm.size) / step / 1e9,
                "sgemm_gflops": sgemm[0],
                "phases": ["data": 0.0, "forward": forwardSeconds * 1e3,
                           "backward": max(forwardBackward - forwardSeconds, 0) * 1e3,
                           "allreduce_exposed": median(timings.map(\.allreduceExposed)) * 1e3,
                           "optimizer": median(timings.map(\.optimizer)) * 1e3],
            ]
            let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: json, as: UTF8.self))
        }
    }
}
