import OCRNN
import OCRTensor
import OCRTestSupport
import XCTest

/// The Winograd F(2×2, 3×3) convolution against the im2col + GEMM reference it replaces for 3×3 stride-1
/// convolutions: output, input gradient and weight gradient, over odd sizes (partial blocks), dilations that split
/// the image into sub-images (and one larger than the image), and more than one image.
final class WinogradTests: XCTestCase {
    func testWinogradAgreesWithIm2colGemm() {
        // (in, out, height, width, dilation, images)
        for (cin, cout, h, w, d, n) in [(3, 4, 7, 9, 1, 3), (5, 6, 8, 8, 2, 2), (4, 3, 6, 10, 4, 1),
                                        (3, 2, 3, 5, 4, 2), (8, 8, 1, 1, 1, 1), (16, 24, 13, 11, 2, 2)] {
            let tag = "in \(cin) out \(cout) \(h)×\(w) d\(d) n\(n)"
            let (fast, reference) = (makeConvolution(cin, cout, d), makeConvolution(cin, cout, d))
            fast.conv.algorithm = .winograd
            reference.conv.algorithm = .im2colGemm
            let x = randomTensor([n, cin, h, w], seed: 5)
            let y = fast.conv.forward(x).clone()
            let expected = reference.conv.forward(x)
            let dy = randomTensor(expected.shape, seed: 6)
            let dx = fast.conv.backward(dy)!.clone()
            let expectedDx = reference.conv.backward(dy)!
            for c in [compare("\(tag) y", y, expected), compare("\(tag) dx", dx, expectedDx),
                      compare("\(tag) dweight", fast.conv.weight.grad, reference.conv.weight.grad)] {
                XCTAssertLessThan(c.relativeMax, 1e-5, c.description)
            }
        }
    }

    /// In bf16 the transformed inputs are stored as bf16 bits: they must be the fp32 transform rounded as the GEMM's
    /// packing rounds it, so that the products, and the convolution, keep the bits of the GEMM on fp32 inputs. The
    /// bf16 path's output and output-gradient transforms (vectorised in C) must give the fp32 ones' values.
    func testTransformsOfTheBF16PathGiveTheFP32Values() {
        for (c, o, h, w, d, n) in [(40, 24, 10, 13, 2, 2), (7, 5, 9, 6, 1, 1), (33, 17, 16, 16, 4, 2)] {
            let tag = "in \(c) out \(o) \(h)×\(w) d\(d) n\(n)"
            let plan = WinogradPlan(images: n, height: h, width: w, dilation: d)
            let t = plan.blockCount
            let x = randomTensor([n, c, h, w], seed: 11)
            let floats = Tensor(zeros: [16 * WinogradPlan.matrixStride(c * t)])
            plan.transformInput(x.data, channels: c, into: .float32(floats.data))
            var bits = [UInt16](repeating: 0xffff, count: 16 * WinogradPlan.bitsStride(c * t))
            bits.withUnsafeMutableBufferPointer { plan.transformInput(x.data, channels: c, into: .bfloat16($0.baseAddress!)) }
            var differ = 0
            for xi in 0..<16 {
                for i in 0..<(c * t) {
                    let want = BF16.round(floats[xi * WinogradPlan.matrixStride(c * t) + i]).bitPattern >> 16
                    differ += bits[xi * WinogradPlan.bitsStride(c * t) + i] == UInt16(want) ? 0 : 1
                }
            }
            XCTAssertEqual(differ, 0, "\(tag): transformed inputs in bf16")

            // The whole forward: the bf16 GEMMs on those fp32 matrices, then the output transform.
            let kernel = Tensor(zeros: [WinogradPlan.kernelCount(outChannels: o, channels: c)])
            WinogradPlan.transformKernel(randomTensor([o, c, 3, 3], seed: 12).data, outChannels: o, channels: c,
                                         into: kernel.data)
            let products = Tensor(zeros: [16 * WinogradPlan.matrixStride(o * t)])
            gemmBatch(m: o, n: t, k: c, a: (0..<16).map { UnsafePointer(kernel.data + $0 * WinogradPlan.matrixStride(o * c)) },
                      b: (0..<16).map { UnsafePointer(floats.data + $0 * WinogradPlan.matrixStride(c * t)) },
                      c: (0..<16).map { products.data + $0 * WinogradPlan.matrixStride(o * t) }, precision: .bfloat16)
            let want = Tensor(zeros: [n, o, h, w]), y = Tensor(zeros: [n, o, h, w])
            plan.transformOutput(products.data, channels: o, into: want.data)
            let scratch = Tensor(zeros: [plan.scratchCount(inChannels: c, outChannels: o, precision: .bfloat16)])
            plan.convolve(x.data, channels: c, kernel: kernel.data, outChannels: o, y.data, scratch: scratch.data,
                          precision: .bfloat16)
            XCTAssertEqual((0..<y.count).filter { y[$0].bitPattern != want[$0].bitPattern }.count, 0,
                           "\(tag): bf16 forward")

            // The output-gradient transform of the bf16 path (vectorised) against the fp32 one.
            let dy = randomTensor([n, o, h, w], seed: 13)
            let (z, zWant) = (Tensor(zeros: [16 * WinogradPlan.matrixStride(o * t)]),
                              Tensor(zeros: [16 * WinogradPlan.matrixStride(o * t)]))
            plan.transformOutputGradient(dy.data, channels: o, into: zWant.data)
            plan.transformOutputGradient(dy.data, channels: o, into: z.data, precision: .bfloat16)
            XCTAssertEqual((0..<z.count).filter { z[$0].bitPattern != zWant[$0].bitPattern }.count, 0,
                           "\(tag): output-gradient transform")
        }
    }

    /// In bf16 the 16 products run a chunk of output channels (forward, input gradient) or input channels (weight
    /// gradient) at a time to bound the scratch (`WinogradPlan.scratchBudget`); every element keeps its dot product,
    /// so each pass must give the unchunked bits whatever the chunk. fp32 is never chunked: its scratch and bits
    /// must not depend on the budget either.
    func testChunkedProductsGiveTheUnchunkedBits() {
        for precision in [Precision.float32, .bfloat16] {
            for (c, o, h, w, d, n) in [(40, 24, 10, 13, 2, 2), (33, 17, 16, 16, 1, 1)] {
                let whole = WinogradPlan(images: n, height: h, width: w, dilation: d)
                let x = randomTensor([n, c, h, w], seed: 21), dy = randomTensor([n, o, h, w], seed: 22)
                let kernel = Tensor(zeros: [WinogradPlan.kernelCount(outChannels: o, channels: c)])
                WinogradPlan.transformKernel(randomTensor([o, c, 3, 3], seed: 23).data, outChannels: o, channels: c,
                                             into: kernel.data)
                func passes(_ plan: WinogradPlan) -> (y: Tensor, dx: Tensor, dw: Tensor, scratch: Int) {
                    let floats = [plan.scratchCount(inChannels: c, outChannels: o, precision: precision),
                                  plan.scratchCount(inChannels: o, outChannels: c, precision: precision),
                                  plan.weightGradientScratchCount(inChannels: c, outChannels: o, precision: precision)]
                    let scratch = Tensor(zeros: [floats.max()!])
                    let (y, dx, dw) = (Tensor(zeros: [n, o, h, w]), Tensor(zeros: [n, c, h, w]),
                                       Tensor(zeros: [o, c, 3, 3]))
                    plan.convolve(x.data, channels: c, kernel: kernel.data, outChannels: o, y.data,
                                  scratch: scratch.data, precision: precision)
                    plan.convolve(dy.data, channels: o, kernel: kernel.data, transposed: true, outChannels: c,
                                  dx.data, scratch: scratch.data, precision: precision)
                    plan.weightGradient(x.data, channels: c, dy.data, outChannels: o, into: dw.data,
                                        scratch: scratch.data, precision: precision)
                    return (y, dx, dw, floats.max()!)
                }
                let want = passes(whole)
                // Budgets of one channel's products, and of a few channels' (chunks that do not divide C or O).
                let oneChannel = 16 * WinogradPlan.matrixStride(whole.blockCount)
                for budget in [oneChannel, 5 * oneChannel + 7] {
                    let tag = "\(precision) in \(c) out \(o) \(h)×\(w) d\(d) n\(n) budget \(budget)"
                    let got = passes(WinogradPlan(images: n, height: h, width: w, dilation: d, scratchBudget: budget))
                    if precision == .bfloat16 {
                        XCTAssertLessThan(got.scratch, want.scratch, "\(tag): scratch")
                    } else {
                        XCTAssertEqual(got.scratch, want.scratch, "\(tag): scratch")
                    }
                    for (name, a, b) in [("y", got.y, want.y), ("dx", got.dx, want.dx), ("dw", got.dw, want.dw)] {
                        let differ = (0..<a.count).filter { a[$0].bitPattern != b[$0].bitPattern }
                        XCTAssertEqual(differ.count, 0, "\(tag) \(name): \(differ.count) of \(a.count) differ, first at "
                                       + "\(differ.first ?? -1)")
                    }
                }
            }
        }
    }

    func makeConvolution(_ cin: Int, _ cout: Int, _ dilation: Int) -> (store: ParameterStore, conv: Conv2d) {
        let store = ParameterStore()
        let conv = Conv2d(store.root.child("c"), in: cin, out: cout, kernel: 3, padding: dilation, dilation: dilation,
                          bias: true)
        store.finalize()
        store.initialize(seed: 4)
        return (store, conv)
    }
}
