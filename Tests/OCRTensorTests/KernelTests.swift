import OCRTensor
import OCRTestSupport
import XCTest

/// The fast kernels against their naive references, and the im2col/col2im pair as exact adjoints.
final class KernelTests: XCTestCase {
    func testGemmAgreesWithNaiveForEveryTransposeCombination() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let (m, n, k) = (7, 5, 9)
            let a = randomTensor([m * k], seed: 1), b = randomTensor([k * n], seed: 2)
            let fast = randomTensor([m * n], seed: 3), slow = fast.clone()
            gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a: a.data, b: b.data, beta: 0.25, c: fast.data)
            naiveGemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a: a.data, b: b.data, beta: 0.25,
                      c: slow.data)
            let c = compare("gemm ta=\(ta) tb=\(tb)", fast, slow)
            XCTAssertLessThan(c.relativeMax, 1e-6, c.description)
        }
    }

    func testIm2colGemmConvolutionAgreesWithDirectConvolution() {
        let cases: [(c: Int, h: Int, w: Int, k: Int, s: Int, p: Int, d: Int)] = [
            (3, 9, 11, 3, 1, 1, 1), (4, 10, 9, 3, 2, 1, 1), (5, 12, 13, 3, 1, 2, 2), (2, 15, 14, 3, 1, 4, 4),
            (6, 7, 5, 1, 2, 0, 1), (3, 8, 8, 3, 2, 0, 1), (2, 5, 6, 3, 1, 3, 1), (3, 4, 4, 3, 1, 4, 4),
        ]
        for (i, t) in cases.enumerated() {
            let g = ConvGeometry(channels: t.c, height: t.h, width: t.w, kernelH: t.k, kernelW: t.k, stride: t.s,
                                 padding: t.p, dilation: t.d)
            let outChannels = 4
            let x = randomTensor([t.c, t.h, t.w], seed: UInt64(10 + i))
            let w = randomTensor([outChannels, t.c, t.k, t.k], seed: UInt64(20 + i))
            let col = Tensor(zeros: [g.columnRows, g.outPixels])
            im2col(x.data, g, col.data)
            let fast = Tensor(zeros: [outChannels, g.outPixels]), slow = Tensor(zeros: [outChannels, g.outPixels])
            gemm(m: outChannels, n: g.outPixels, k: g.columnRows, a: w.data, b: col.data, c: fast.data)
            naiveConvolution(x.data, w.data, outChannels: outChannels, g, slow.data)
            let c = compare("conv case \(i) \(t)", fast, slow)
            XCTAssertLessThan(c.relativeMax, 1e-5, c.description)
        }
    }

    /// ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩ for random x and c: col2im is the exact transpose, so the convolution's
    /// input gradient is right whenever im2col is.
    func testCol2imIsTheAdjointOfIm2col() {
        for (i, (s, p, d)) in [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 0, 1), (3, 2, 1)].enumerated() {
            let g = ConvGeometry(channels: 3, height: 9, width: 10, kernelH: 3, kernelW: 3, stride: s, padding: p,
                                 dilation: d)
            let x = randomTensor([3, 9, 10], seed: UInt64(30 + i))
            let c = randomTensor([g.columnRows, g.outPixels], seed: UInt64(40 + i))
            let col = Tensor(zeros: c.shape)
            im2col(x.data, g, col.data)
            let back = Tensor(zeros: x.shape)
            col2im(c.data, g, back.data)
            XCTAssertEqual(dot(col, c), dot(x, back), accuracy: 1e-6 * max(1, abs(dot(col, c))), "case \(i)")
        }
    }
}
