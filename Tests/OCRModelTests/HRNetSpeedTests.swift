import Dispatch
import Foundation
import OCRModel
import OCRNN
import OCRTensor
import OCRTestSupport
import XCTest

/// Timings behind the HRNet speed notes; they only run with OCR_BENCH=1 (minutes at 512×1024), e.g.
/// `OCR_BENCH=1 OCR_BENCH_CROP=512x1024 OCR_BENCH_MODELS=hr18,hr48 swift test -c release --filter HRNetSpeedTests`
/// (also OCR_BENCH_ITERS, OCR_BENCH_BATCH, OCR_BENCH_THREADS).
final class HRNetSpeedTests: XCTestCase {
    let environment = ProcessInfo.processInfo.environment

    override func setUpWithError() throws {
        try XCTSkipUnless(environment["OCR_BENCH"] == "1", "benchmarks run with OCR_BENCH=1")
        BLAS.setThreads(Int(environment["OCR_BENCH_THREADS"] ?? "") ?? ProcessInfo.processInfo.activeProcessorCount)
    }

    var crop: (Int, Int) {
        let parts = (environment["OCR_BENCH_CROP"] ?? "512x1024").split(separator: "x").map { Int($0)! }
        return (parts[0], parts[1])
    }

    var iterations: Int { Int(environment["OCR_BENCH_ITERS"] ?? "") ?? 2 }

    /// Fastest of `iterations` runs after one warm-up, in ms: on a machine shared with other jobs single runs vary
    /// by several times (measured 1.6–22 s for the same PyTorch step), and the fastest is the most repeatable.
    func fastest(_ body: () -> Void) -> Double {
        body()
        var best = Double.infinity
        for _ in 0..<iterations {
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        return best
    }

    /// One training step (forward, loss, backward) of OCRNet-HR18 / HR48, one image per step, and the OCR head's
    /// 3×3 bottleneck alone at 1/4 resolution (forward + backward), the single largest layer.
    func testTrainingStep() {
        let (h, w) = crop
        let batch = Int(environment["OCR_BENCH_BATCH"] ?? "") ?? 1
        let names = (environment["OCR_BENCH_MODELS"] ?? "hr18,hr48").split(separator: ",").map(String.init)
        for (name, hrnet) in [("hr18s", HRNetConfig.w18Small), ("hr18", .w18), ("hr48", .w48)]
        where names.contains(name) {
            let model = OCRNet(config: .hrnet(hrnet), seed: 1)
            let images = randomTensor([batch, 3, h, w], seed: 2)
            let labels = LabelMap(shape: [batch, h, w], values: (0..<(batch * h * w)).map { Int32($0 % 19) })
            var forwardMs = Double.infinity
            let stepMs = fastest {
                model.store.zeroGrad()
                let start = DispatchTime.now().uptimeNanoseconds
                model.forward(images)
                forwardMs = min(forwardMs, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
                _ = model.loss(labels)
                model.backward()
            }
            let concat = hrnet.outChannels.reduce(0, +)
            let store = ParameterStore()
            let bottleneck = Conv2d(store.root.child("bottleneck"), in: concat, out: 512, kernel: 3, padding: 1)
            store.finalize()
            let x = randomTensor([batch, concat, h / 4, w / 4], seed: 3)
            var bottleneckForwardMs = Double.infinity
            let bottleneckMs = fastest {
                let start = DispatchTime.now().uptimeNanoseconds
                let y = bottleneck.forward(x)
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
                bottleneckForwardMs = min(bottleneckForwardMs, elapsed)
                bottleneck.backward(y)
            }
            let gmac = Double(batch * (h / 4) * (w / 4) * concat * 9 * 512) / 1e9
            print(String(format: "%@ %dx%d batch %d, %d threads: step %.0f ms (forward %.0f ms), fastest of %d, "
                         + "%.3f img/s; OCR bottleneck 3×3 %d→512 (%.1f GMAC): forward %.0f ms, forward+backward "
                         + "%.0f ms (%.0f%% of the step)",
                         name, h, w, batch, BLAS.threads, stepMs, forwardMs, iterations,
                         Double(batch) * 1000 / stepMs, concat, gmac, bottleneckForwardMs, bottleneckMs,
                         100 * bottleneckMs / stepMs))
        }
    }

    /// Does running the independent branches of an HR module at the same time help? The four branches of a
    /// stage-4 module (4 BasicBlocks each, equal FLOPs per branch) run one after the other with all BLAS threads,
    /// versus concurrently (one task per branch, each with its own workspace, BLAS single-threaded).
    func testConcurrentBranches() {
        let (h, w) = crop
        let cores = ProcessInfo.processInfo.activeProcessorCount
        for (name, width) in [("hr18", 18), ("hr48", 48)] {
            let branches = (0..<4).map { i in BranchStack(channels: width << i, blocks: 4) }
            let inputs = (0..<4).map { i in randomTensor([1, width << i, h >> (i + 2), w >> (i + 2)], seed: UInt64(i)) }
            BLAS.setThreads(cores)
            let sequential = fastest { for (b, x) in zip(branches, inputs) { b.step(x) } }
            BLAS.setThreads(1)
            let concurrent = fastest {
                DispatchQueue.concurrentPerform(iterations: branches.count) { i in branches[i].step(inputs[i]) }
            }
            BLAS.setThreads(cores)
            print(String(format: "%@ stage-4 module branches at %dx%d, forward+backward: one after the other "
                         + "(%d BLAS threads) %.0f ms, concurrently (%d tasks, 1 BLAS thread each) %.0f ms",
                         name, h, w, cores, sequential, branches.count, concurrent))
        }
    }
}

/// One HR-module branch in isolation: `blocks` BasicBlocks (3×3 conv+BN+ReLU, 3×3 conv+BN, residual add + ReLU) with
/// its own parameter store, so concurrent branches never share a workspace.
final class BranchStack {
    let store: ParameterStore
    let convs: [(ConvBN, ConvBN)]
    let joins: [ResidualAddReLU]

    init(channels: Int, blocks: Int) {
        let store = ParameterStore()
        self.store = store
        convs = (0..<blocks).map { b in
            let scope = store.root.child("\(b)")
            return (ConvBN(module: scope.child("conv1"), in: channels, out: channels, kernel: 3),
                    ConvBN(module: scope.child("conv2"), in: channels, out: channels, kernel: 3, relu: false))
        }
        joins = (0..<blocks).map { _ in ResidualAddReLU() }
        store.finalize()
        store.initialize(seed: 1)
    }

    /// Forward, then backward of Σ y (gradient of ones).
    func step(_ x: Tensor) {
        var h = x
        for (pair, join) in zip(convs, joins) { h = join.forward(pair.1.forward(pair.0.forward(h)), h) }
        var g = Tensor(zeros: h.shape)
        g.fill(1)
        for (pair, join) in zip(convs, joins).reversed() {
            let d = join.backward(g)
            let dx = pair.0.backward(pair.1.backward(d)!)!
            addInPlace(dx, d)
            g = dx
        }
    }
}
