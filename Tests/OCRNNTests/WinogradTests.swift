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

    func makeConvolution(_ cin: Int, _ cout: Int, _ dilation: Int) -> (store: ParameterStore, conv: Conv2d) {
        let store = ParameterStore()
        let conv = Conv2d(store.root.child("c"), in: cin, out: cout, kernel: 3, padding: dilation, dilation: dilation,
                          bias: true)
        store.finalize()
        store.initialize(seed: 4)
        return (store, conv)
    }
}
