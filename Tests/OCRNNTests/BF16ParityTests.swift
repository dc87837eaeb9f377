import OCRNN
import OCRTensor
import OCRTestSupport
import XCTest

/// The bf16 mode (bf16 GEMM operands, fp32 accumulation and storage) of each GEMM-shaped op against float64 truth,
/// bounded by 1.5× the error PyTorch's bf16 autocast makes on the same inputs (docs/TESTING.md "bf16"). The figures
/// come from `python3 Tools/make_golden.py --bf16` (torch 2.15, CPU, oneDNN), which writes these fixtures and
/// prints them: relative norm ‖result − truth‖ / ‖truth‖. Each result must also be further from the truth than
/// fp32 can be (1e-4), so a bf16 path that silently ran fp32 fails.
final class BF16ParityTests: XCTestCase {
    /// PyTorch bf16-autocast relative-norm errors per fixture and output.
    static let pytorchError: [String: [String: Double]] = [
        "conv3x3_64": ["y": 2.864e-3, "dx": 2.891e-3, "dweight": 2.898e-3],
        "conv3x3_d2_64_48": ["y": 2.896e-3, "dx": 2.824e-3, "dweight": 2.881e-3],
        "conv3x3_s2_32_64": ["y": 2.946e-3, "dx": 2.928e-3, "dweight": 2.900e-3],
        "conv1x1_128_64": ["y": 2.890e-3, "dx": 2.910e-3, "dweight": 2.895e-3],
        "bmm_gather": ["c": 2.753e-3, "da": 2.876e-3, "db": 2.908e-3],
        "bmm_similarity": ["c": 3.330e-3, "da": 3.355e-3, "db": 3.201e-3],
        "bmm_attend": ["c": 2.913e-3, "da": 3.030e-3, "db": 2.888e-3],
    ]
    static let allowedRatio = 1.5

    /// Ratio of our error to PyTorch's for each output, checked against the bound and printed.
    @discardableResult
    func check(_ fixture: String, _ output: String, _ actual: Tensor, _ truth: Tensor,
               file: StaticString = #filePath, line: UInt = #line) -> Double {
        let pytorch = Self.pytorchError[fixture]![output]!
        let c = compare("\(fixture) \(output)", actual, truth)
        let ratio = c.relativeNorm / pytorch
        print(String(format: "%@ — %.2f× PyTorch bf16's %.3e", c.description, ratio, pytorch))
        XCTAssertLessThanOrEqual(ratio, Self.allowedRatio, c.description, file: file, line: line)
        XCTAssertGreaterThan(c.relativeNorm, 1e-4, "\(c.description): no bf16 rounding seen", file: file, line: line)
        return ratio
    }

    /// A convolution of the fixture's shape in bf16 training mode, its weights loaded.
    func convolution(_ f: SafetensorsFile, algorithm: Conv2d.Algorithm) throws -> (Conv2d, ParameterStore) {
        let w = try f.tensor("weight")
        let meta = { (key: String) in Int(f.metadata[key]!)! }
        let store = ParameterStore()
        let conv = Conv2d(store.root.child("conv"), in: w.shape[1], out: w.shape[0], kernel: w.shape[2],
                          stride: meta("stride"), padding: meta("padding"), dilation: meta("dilation"))
        conv.algorithm = algorithm
        store.finalize()
        store.trainingPrecision = .bfloat16
        conv.weight.value.copy(from: w)
        return (conv, store)
    }

    /// Forward, input and weight gradients by im2col + GEMM, by Winograd F(2×2, 3×3) where it applies, whose
    /// transforms (sums of up to 4 inputs, halves of kernel entries) round to bf16 before the GEMMs, and on the AMX
    /// tiles where this machine has them (stride 1: forward and input gradient).
    func testConvolutionsInBF16() throws {
        for name in ["conv3x3_64", "conv3x3_d2_64_48", "conv3x3_s2_32_64", "conv1x1_128_64"] {
            let f = try Fixtures.file("bf16/\(name).safetensors")
            for algorithm in [Conv2d.Algorithm.im2colGemm, .winograd, .tiles] {
                let (conv, _) = try convolution(f, algorithm: algorithm)
                let x = try f.tensor("x")
                let winograd = algorithm == .winograd
                if winograd && !WinogradPlan.applies(kernel: conv.kernel, stride: conv.stride, padding: conv.padding,
                                                     dilation: conv.dilation) { continue }
                let g = ConvGeometry(channels: conv.inChannels, height: x.shape[2], width: x.shape[3],
                                     kernelH: conv.kernel, kernelW: conv.kernel, stride: conv.stride,
                                     padding: conv.padding, dilation: conv.dilation)
                if algorithm == .tiles && (conv.kernel == 1 || !BF16.convolves(outChannels: conv.outChannels,
                                                                               geometry: g)) { continue }
                let label = "\(name)" + (winograd ? " (Winograd)" : algorithm == .tiles ? " (tiles)" : "")
                print(label)
                check(name, "y", conv.forward(x), try f.tensor("y"))
                check(name, "dx", conv.backward(try f.tensor("dy"))!, try f.tensor("dx"))
                check(name, "dweight", conv.weight.grad, try f.tensor("dweight"))
            }
        }
    }

    /// The OCR head's three batched products (object gather, pixel-object similarity, attention) in bf16.
    func testBatchedMatMulsInBF16() throws {
        for name in ["bmm_gather", "bmm_similarity", "bmm_attend"] {
            let f = try Fixtures.file("bf16/\(name).safetensors")
            let (a, b) = (try f.tensor("a"), try f.tensor("b"))
            let (transA, transB) = (f.metadata["trans_a"] == "1", f.metadata["trans_b"] == "1")
            let batch = a.shape[0]
            let (m, k) = transA ? (a.shape[2], a.shape[1]) : (a.shape[1], a.shape[2])
            let n = transB ? b.shape[1] : b.shape[2]
            let product = BatchedMatMul(transA: transA, transB: transB, alpha: Float(f.metadata["alpha"]!)!)
            let c = product.forward(a, b, batch: batch, m: m, n: n, k: k, outputShape: [batch, m, n],
                                    precision: .bfloat16)
            check(name, "c", c, try f.tensor("c"))
            let (da, db) = product.backward(try f.tensor("dc"))
            check(name, "da", da, try f.tensor("da"))
            check(name, "db", db, try f.tensor("db"))
        }
    }

    /// The algorithm `.automatic` picks can differ between an fp32 evaluation and a bf16 training pass (on AMX);
    /// backward follows its own forward's choice, so a training step after an evaluation gives the same bits as
    /// one without it.
    func testBackwardFollowsItsForwardAfterAnEvaluation() throws {
        let f = try Fixtures.file("bf16/conv3x3_64.safetensors")
        let (x, dy) = (try f.tensor("x"), try f.tensor("dy"))
        var results: [(dx: Tensor, dweight: Tensor)] = []
        for evaluateFirst in [false, true] {
            let (conv, store) = try convolution(f, algorithm: .automatic)
            if evaluateFirst {
                store.training = false
                _ = conv.forward(x)
                store.training = true
            }
            _ = conv.forward(x)
            results.append((conv.backward(dy)!, conv.weight.grad.clone()))
        }
        for (name, c) in [("dx", compare("dx", results[1].dx, results[0].dx)),
                          ("dweight", compare("dweight", results[1].dweight, results[0].dweight))] {
            XCTAssertEqual(c.maxAbsDiff, 0, "\(name) after an evaluation: \(c)")
        }
    }

    /// The bf16 input gradients that scatter dcol = Wᵀ·dy back (strided, or from 128 output channels) form dcol 32
    /// input channels at a time: dx must have the bits of one whole dcol GEMM and one col2im, over a partial last
    /// chunk too (80 channels).
    func testScatteredInputGradientHasTheBitsOfOneWholeDcol() {
        // (in, out, stride, padding, dilation, height, width)
        for (cin, cout, stride, padding, dilation, h, w) in [(80, 40, 2, 1, 1, 15, 12), (80, 128, 1, 2, 2, 9, 10)] {
            let store = ParameterStore()
            let conv = Conv2d(store.root.child("conv"), in: cin, out: cout, kernel: 3, stride: stride,
                              padding: padding, dilation: dilation)
            conv.algorithm = .im2colGemm
            store.finalize()
            store.initialize(seed: 3)
            store.trainingPrecision = .bfloat16
            let x = randomTensor([2, cin, h, w], seed: 11)
            let y = conv.forward(x)
            let dy = randomTensor(y.shape, seed: 12)
            let dx = conv.backward(dy)!
            let g = ConvGeometry(channels: cin, height: h, width: w, kernelH: 3, kernelW: 3, stride: stride,
                                 padding: padding, dilation: dilation)
            let dcol = Tensor(zeros: [g.columnRows * g.outPixels]), want = Tensor(zeros: x.shape)
            for i in 0..<2 {
                gemm(transA: true, m: g.columnRows, n: g.outPixels, k: cout, a: conv.weight.value.data,
                     b: dy.data + i * cout * g.outPixels, c: dcol.data, precision: .bfloat16)
                col2im(dcol.data, g, want.data + i * cin * h * w)
            }
            let c = compare("dx \(cin)→\(cout) stride \(stride) dilation \(dilation)", dx, want)
            print(c.description)
            XCTAssertEqual(c.maxAbsDiff, 0, c.description)
            XCTAssertGreaterThan(compare("dx", dx, Tensor(zeros: x.shape)).maxAbsDiff, 0)
        }
    }

    /// Evaluation runs fp32 whatever the training precision (mmengine's ValLoop is outside the autocast): the
    /// same convolution gives fp32's bits in eval mode.
    func testEvaluationStaysFP32() throws {
        let f = try Fixtures.file("bf16/conv3x3_64.safetensors")
        let (conv, store) = try convolution(f, algorithm: .automatic)
        let x = try f.tensor("x")
        store.training = false
        let evaluated = conv.forward(x).clone()
        store.trainingPrecision = .float32
        let fp32 = conv.forward(x)
        XCTAssertEqual(compare("eval-mode output", evaluated, fp32).maxAbsDiff, 0)
    }
}
