import ArgumentParser
import Foundation
import OCRNN
import OCRTensor

/// Times forward and backward of the ResNet-50-D8 + OCR-head convolution shapes and reports GFLOP/s next to what
/// a single large `cblas_sgemm` reaches on this machine, so the conv kernels are judged against the BLAS peak.
struct BenchConvs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-convs",
        abstract: "Benchmark the R50-D8 convolution shapes against the sgemm rate (GFLOP/s).")

    @Option(help: "Input height of the network (the feature maps are at 1/8 of it, the stem at 1/2).")
    var height = 512
    @Option(help: "Input width of the network.")
    var width = 1024
    @Option(help: "Images per batch.")
    var batch = 1
    @Option(help: "BLAS (and kernel) threads.")
    var threads = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Timed repetitions per shape (median reported).")
    var repeats = 3
    @Flag(help: "Time the convolutions in bf16 (as `train --amp` runs them) instead of fp32.")
    var amp = false
    @Flag(help: """
        Alternate the convolution algorithms call by call on each shape (automatic, im2col + GEMM, Winograd and the \
        AMX tiles where they apply) and report each one's best forward and backward, instead of the table against sgemm.
        """)
    var alternate = false

    func run() throws {
        BLAS.setThreads(threads)
        print("OpenBLAS core: \(BLAS.coreName), threads: \(threads)")
        let peak = sgemmRate(repeats: repeats)
        print(String(format: "sgemm 2048×2048×2048: %.1f GFLOP/s", peak))
        print(String(format: "bf16 gemm 2048×2048×2048 (%@): %.1f GFLOP/s", BF16.kernelName,
                     gemmRate(repeats: repeats, precision: .bfloat16)))
        let (h8, w8) = (height / 8, width / 8)
        // (name, in, out, kernel, stride, padding, dilation, input H, input W)
        let shapes: [(String, Int, Int, Int, Int, Int, Int, Int, Int)] = [
            ("stem.3 3×3 32→32", 32, 32, 3, 1, 1, 1, height / 2, width / 2),
            ("layer1 1×1 256→64", 256, 64, 1, 1, 0, 1, height / 4, width / 4),
            ("layer1 3×3 64→64", 64, 64, 3, 1, 1, 1, height / 4, width / 4),
            ("layer2 3×3 128→128", 128, 128, 3, 1, 1, 1, h8, w8),
            ("layer3 1×1 1024→256", 1024, 256, 1, 1, 0, 1, h8, w8),
            ("layer3 3×3 d2 256→256", 256, 256, 3, 1, 2, 2, h8, w8),
            ("layer4 1×1 512→2048", 512, 2048, 1, 1, 0, 1, h8, w8),
            ("layer4 3×3 d4 512→512", 512, 512, 3, 1, 4, 4, h8, w8),
            ("ocr bottleneck 3×3 2048→512", 2048, 512, 3, 1, 1, 1, h8, w8),
            ("fcn 3×3 1024→256", 1024, 256, 3, 1, 1, 1, h8, w8),
        ]
        if alternate {
            print("shape                          algorithm      best fwd ms  best bwd ms  (of \(repeats), alternated)")
        } else {
            print("shape                          fwd GFLOP/s (%sgemm) bwd GFLOP/s (%sgemm) GEMM-only (%sgemm)  fwd ms  bwd ms im2col ms")
        }
        for (name, cin, cout, k, s, p, d, h, w) in shapes {
            let store = ParameterStore()
            store.trainingPrecision = amp ? Precision.available(.bfloat16) : .float32
            let conv = Conv2d(store.root.child("conv"), in: cin, out: cout, kernel: k, stride: s, padding: p,
                              dilation: d)
            store.finalize()
            store.initialize(seed: 1)
            let x = Tensor(zeros: [batch, cin, h, w])
            var rng = SplitMix64(seed: 7)
            for i in 0..<x.count { x[i] = Float(rng.uniform()) - 0.5 }
            let y = conv.forward(x)
            let flops = 2.0 * Double(batch * cout * y.shape[2] * y.shape[3] * cin * k * k)
            let dy = y.clone()
            if alternate {
                alternateAlgorithms(conv, name: name, x: x, dy: dy)
                continue
            }
            let forward = medianSeconds(repeats) { _ = conv.forward(x) }
            // Each backward needs its own forward (backward lets go of the input it saved).
            let backward = medianSeconds(repeats, before: { _ = conv.forward(x) }) { conv.backward(dy) }
            let g = ConvGeometry(channels: cin, height: h, width: w, kernelH: k, kernelW: k, stride: s, padding: p,
                                 dilation: d)
            let col = Tensor(zeros: [g.columnRows * g.outPixels])
            let unfold = k == 1 && s == 1 ? 0 : medianSeconds(repeats) {
                for i in 0..<batch { im2col(x.data + i * cin * h * w, g, col.data) }
            }
            // The same GEMM alone (no im2col, no bias): the ceiling OpenBLAS sets for this shape.
            let gemmOnly = medianSeconds(repeats) {
                for i in 0..<batch {
                    gemm(m: cout, n: g.outPixels, k: g.columnRows, a: conv.weight.value.data, b: col.data,
                         c: y.data + i * cout * g.outPixels, precision: store.trainingPrecision)
                }
            }
            // Backward is two GEMMs of the forward's size (weight and input gradients).
            let (f, b) = (flops / forward / 1e9, 2 * flops / backward / 1e9)
            print(name.padding(toLength: 30, withPad: " ", startingAt: 0)
                  + String(format: " %8.1f (%5.1f%%) %8.1f (%5.1f%%) %8.1f (%5.1f%%) %7.2f %7.2f %7.2f", f, 100 * f / peak,
                           b, 100 * b / peak, flops / gemmOnly / 1e9, 100 * flops / gemmOnly / 1e9 / peak,
                           forward * 1e3, backward * 1e3, unfold * 1e3))
        }
    }
}

extension BenchConvs {
    /// Forward and backward of `conv` under each algorithm in turn, `repeats` rounds (after one warm-up round), so
    /// that the host's slow and fast phases fall on every algorithm alike; prints each one's best times.
    func alternateAlgorithms(_ conv: Conv2d, name: String, x: Tensor, dy: Tensor) {
        var algorithms: [(String, Conv2d.Algorithm)] = [("automatic", .automatic), ("im2col+GEMM", .im2colGemm)]
        if WinogradPlan.applies(kernel: conv.kernel, stride: conv.stride, padding: conv.padding,
                                dilation: conv.dilation) {
            algorithms.append(("Winograd", .winograd))
        }
        if amp && BF16.hasMatrixEngine && conv.stride == 1 && conv.kernel > 1 { algorithms.append(("tiles", .tiles)) }
        var best = Array(repeating: (forward: Double.infinity, backward: Double.infinity), count: algorithms.count)
        for round in 0...max(repeats, 1) {
            for (index, (_, algorithm)) in algorithms.enumerated() {
                conv.algorithm = algorithm
                let forward = seconds { _ = conv.forward(x) }
                let backward = seconds { conv.backward(dy) }
                if round > 0 { best[index] = (min(best[index].forward, forward), min(best[index].backward, backward)) }
            }
        }
        for (index, (label, _)) in algorithms.enumerated() {
            print(name.padding(toLength: 30, withPad: " ", startingAt: 0) + " "
                  + label.padding(toLength: 14, withPad: " ", startingAt: 0)
                  + String(format: " %11.2f  %11.2f", best[index].forward * 1e3, best[index].backward * 1e3))
        }
    }
}

/// Wall time of one run of `body`.
func seconds(_ body: () -> Void) -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

/// GFLOP/s of one 2048³ `cblas_sgemm` with the current BLAS threads: the peak the convolutions are judged against.
func sgemmRate(repeats: Int) -> Double { gemmRate(repeats: repeats, precision: .float32) }

/// GFLOP/s of one 2048³ product in `precision` (sgemm or the bf16 GEMM).
func gemmRate(repeats: Int, precision: Precision) -> Double {
    let n = 2048
    let a = Tensor(zeros: [n, n]), b = Tensor(zeros: [n, n]), c = Tensor(zeros: [n, n])
    a.fill(0.5); b.fill(0.25)
    let t = medianSeconds(repeats) { gemm(m: n, n: n, k: n, a: a.data, b: b.data, c: c.data, precision: precision) }
    return 2.0 * Double(n * n * n) / t / 1e9
}

/// Median wall time of `repeats` runs of `body` after one warm-up run, each run after an untimed `before`.
func medianSeconds(_ repeats: Int, before: () -> Void = {}, _ body: () -> Void) -> Double {
    before()
    body()
    var times: [Double] = []
    for _ in 0..<max(repeats, 1) {
        before()
        times.append(seconds(body))
    }
    return times.sorted()[times.count / 2]
}
