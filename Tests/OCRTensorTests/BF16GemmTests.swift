import OCRTensor
import OCRTestSupport
import XCTest

/// The bf16 GEMM as SwiftPM builds it (COCRBF16): against the double-accumulated product of the bf16-rounded
/// operands, for every transpose and odd sizes; bit-identical across thread counts; and round-to-nearest-even.
/// (Tools/bf16_kernel/build.sh tests every kernel of the library with gcc, one process per kernel.)
final class BF16GemmTests: XCTestCase {
    private var threadsBefore: BLAS.ThreadCounts?
    override func setUp() { threadsBefore = BLAS.threadCounts }
    override func tearDown() { threadsBefore.map(BLAS.restore) }

    func testMatchesTheRoundedReferenceForEveryTranspose() {
        print("bf16 kernel: \(BF16.kernelName)")
        let shapes = [(1, 1, 1), (7, 33, 65), (19, 300, 129), (70, 19, 257), (64, 64, 64), (33, 17, 1031)]
        var seed: UInt64 = 1
        for (m, n, k) in shapes {
            for (transA, transB) in [(false, false), (true, false), (false, true), (true, true)] {
                for (alpha, beta) in [(Float(1), Float(0)), (0.5, 1), (-2, 0.25)] {
                    seed += 1
                    let a = randomTensor([m * k], seed: seed), b = randomTensor([k * n], seed: seed + 100)
                    let c = randomTensor([m * n], seed: seed + 200)
                    let (ra, rb) = (Tensor(zeros: [m * k]), Tensor(zeros: [k * n]))
                    for i in 0..<(m * k) { ra[i] = BF16.round(a[i]) }
                    for i in 0..<(k * n) { rb[i] = BF16.round(b[i]) }
                    let want = Tensor(zeros: [m * n]), got = Tensor(zeros: [m * n])
                    for i in 0..<(m * n) { want[i] = c[i]; got[i] = c[i] }
                    naiveGemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: ra.data, b: rb.data,
                              beta: beta, c: want.data)
                    gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a.data, b: b.data,
                         beta: beta, c: got.data, precision: .bfloat16)
                    // fp32 accumulation of k exact products: |error| ≤ ~k·2⁻²⁴·Σ|a||b| (operands within ±1), plus
                    // the rounding of the alpha/beta update.
                    let bound = Double(k + 8) * pow(2, -24) * (Double(abs(alpha)) * Double(k) + Double(abs(beta)))
                    let worst = (0..<(m * n)).map { abs(Double(got[$0]) - Double(want[$0])) }.max() ?? 0
                    XCTAssertLessThanOrEqual(worst, bound, "m \(m) n \(n) k \(k) tA \(transA) tB \(transB) α \(alpha) β \(beta)")
                }
            }
        }
    }

    /// Rounding the operands is what makes it bf16: the result must differ from the fp32 product by about 2⁻⁹.
    func testOperandsAreRoundedToBF16() {
        let (m, n, k) = (16, 16, 64)
        let a = randomTensor([m * k], seed: 7), b = randomTensor([k * n], seed: 8)
        let fp32 = Tensor(zeros: [m * n]), bf16 = Tensor(zeros: [m * n])
        naiveGemm(m: m, n: n, k: k, a: a.data, b: b.data, c: fp32.data)
        gemm(m: m, n: n, k: k, a: a.data, b: b.data, c: bf16.data, precision: .bfloat16)
        let worst = (0..<(m * n)).map { abs(Double(bf16[$0]) - Double(fp32[$0])) }.max() ?? 0
        XCTAssertGreaterThan(worst, 1e-4, "bf16 operands move the product")
        XCTAssertLessThan(worst, 0.2)
    }

    func testResultsDoNotDependOnTheThreadCount() {
        let (m, n, k) = (130, 257, 300)
        let a = randomTensor([m * k], seed: 3), b = randomTensor([k * n], seed: 4)
        var results: [[Float]] = []
        for threads in [1, 2] {
            BLAS.setThreads(threads)
            let c = Tensor(zeros: [m * n])
            gemm(transB: true, m: m, n: n, k: k, a: a.data, b: b.data, c: c.data, precision: .bfloat16)
            results.append((0..<(m * n)).map { c[$0] })
        }
        XCTAssertEqual(results[0], results[1])
    }

    /// A batch gives each product the bits of its own GEMM: with more products than threads (each whole on one
    /// thread, the transposed-C path among them) and with fewer (one after the other on both threads).
    func testBatchGivesEachProductTheBitsOfItsOwnGEMM() {
        BLAS.setThreads(2)
        for (count, m, n, k, transA, transB) in [(5, 37, 70, 129, false, true), (3, 70, 19, 65, true, false),
                                                   (1, 30, 200, 40, false, false)] {
            let operands = (0..<count).map { i in
                (randomTensor([m * k], seed: UInt64(10 + i)), randomTensor([k * n], seed: UInt64(20 + i)))
            }
            let batched = (0..<count).map { _ in Tensor(zeros: [m * n]) }
            gemmBatch(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5,
                      a: operands.map { UnsafePointer($0.0.data) }, b: operands.map { UnsafePointer($0.1.data) },
                      c: batched.map(\.data), precision: .bfloat16)
            for (i, (a, b)) in operands.enumerated() {
                let alone = Tensor(zeros: [m * n])
                gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: a.data, b: b.data,
                     c: alone.data, precision: .bfloat16)
                XCTAssertEqual((0..<(m * n)).map { batched[i][$0] }, (0..<(m * n)).map { alone[$0] },
                               "product \(i) of \(count), \(m)×\(n)×\(k)")
            }
        }
    }

    /// An im2col B unfolded block by block inside the GEMM gives the bits of im2col into memory and `gemm`, as the
    /// forward (A·col) and as the weight gradient (A·colᵀ), on 1 and 2 threads: strides, paddings, dilations
    /// reaching past the image, and sizes past the kernels' k and column blocks (AMX: kc 1024, nc 512).
    func testIm2colOperandGivesTheBitsOfTheStoredColumnMatrix() {
        // (channels, height, width, kernel, stride, padding, dilation)
        let geometries = [(3, 9, 11, 3, 1, 1, 1), (5, 8, 7, 3, 2, 1, 1), (4, 10, 9, 3, 1, 2, 2), (6, 7, 13, 3, 1, 4, 4),
                          (2, 6, 6, 1, 2, 0, 1), (3, 9, 5, 5, 1, 2, 1), (120, 40, 30, 3, 1, 1, 1),
                          (64, 20, 70, 3, 2, 1, 1)]
        var seed: UInt64 = 500
        for (channels, height, width, kernel, stride, padding, dilation) in geometries {
            let g = ConvGeometry(channels: channels, height: height, width: width, kernelH: kernel, kernelW: kernel,
                                 stride: stride, padding: padding, dilation: dilation)
            seed += 1
            let image = randomTensor([channels * height * width], seed: seed)
            let col = Tensor(zeros: [g.columnRows * g.outPixels])
            im2col(image.data, g, col.data)
            let m = 37
            for transB in [false, true] {
                let k = transB ? g.outPixels : g.columnRows, n = transB ? g.columnRows : g.outPixels
                let a = randomTensor([m * k], seed: seed + 1000)
                let packed = Tensor(zeros: [BF16.packedFloats(m: m, k: k)])
                BF16.packA(m: m, k: k, a: a.data, into: packed.data)
                for threads in [1, 2] {
                    BLAS.setThreads(threads)
                    let stored = Tensor(zeros: [m * n]), unfolded = Tensor(zeros: [m * n])
                    gemm(transB: transB, m: m, n: n, k: k, a: a.data, b: col.data, c: stored.data,
                         precision: .bfloat16)
                    BF16.gemmIm2col(transB: transB, m: m, packedA: packed.data, geometry: g, image: image.data,
                                    c: unfolded.data)
                    let differing = (0..<(m * n)).filter { stored[$0].bitPattern != unfolded[$0].bitPattern }
                    XCTAssertEqual(differing.count, 0, "\(g), transB \(transB), \(threads) threads: first at "
                                   + "\(differing.first.map { "\($0): \(unfolded[$0]) for \(stored[$0])" } ?? "")")
                }
            }
        }
    }

    /// The convolution straight on the AMX tiles (`BF16.convolve`), where this machine has them: against the
    /// rounded reference product of the kernel and the stored column matrix, the same bits on 1 and 2 threads, and
    /// the input gradient's flipped packing giving the bits of the flipped kernel written out. Channels, widths and
    /// outputs off the kernel's 32-channel chunks, 16-pixel blocks and 32-output blocks; dilation; no padding.
    func testConvolutionOnTilesMatchesTheRoundedReference() throws {
        // (channels, outputs, height, width, kernel, padding, dilation)
        let shapes = [(32, 48, 9, 11, 3, 1, 1), (40, 19, 8, 21, 3, 2, 2), (64, 70, 7, 13, 3, 4, 4), (3, 32, 9, 5, 5, 2, 1),
                      (130, 64, 12, 30, 3, 1, 1), (64, 33, 10, 40, 3, 0, 1),
                      (32, 40, 50, 61, 3, 1, 1)]   // more pixels than one block of the weight gradient
        var seed: UInt64 = 900
        for (channels, outputs, height, width, kernel, padding, dilation) in shapes {
            let g = ConvGeometry(channels: channels, height: height, width: width, kernelH: kernel, kernelW: kernel,
                                 padding: padding, dilation: dilation)
            guard BF16.convolves(outChannels: outputs, geometry: g) else {
                throw XCTSkip("no AMX tiles here (\(BF16.kernelName))")
            }
            seed += 1
            let image = randomTensor([channels * height * width], seed: seed)
            let w = randomTensor([outputs * g.columnRows], seed: seed + 1000)
            let col = Tensor(zeros: [g.columnRows * g.outPixels])
            im2col(image.data, g, col.data)
            let (rw, rcol) = (Tensor(zeros: [w.count]), Tensor(zeros: [col.count]))
            for i in 0..<w.count { rw[i] = BF16.round(w[i]) }
            for i in 0..<col.count { rcol[i] = BF16.round(col[i]) }
            let want = Tensor(zeros: [outputs * g.outPixels])
            naiveGemm(transA: false, transB: false, m: outputs, n: g.outPixels, k: g.columnRows, alpha: 1,
                      a: rw.data, b: rcol.data, beta: 0, c: want.data)

            let floats = BF16.convolutionFloats(outChannels: outputs, geometry: g)
            let packed = Tensor(zeros: [floats.kernel]), planes = Tensor(zeros: [floats.planes])
            BF16.packConvolutionKernel(outChannels: outputs, geometry: g, weights: w.data, into: packed.data)
            var results: [Tensor] = []
            for threads in [1, 2] {
                BLAS.setThreads(threads)
                let y = Tensor(zeros: [outputs * g.outPixels])
                y.fill(.nan)
                BF16.convolve(outChannels: outputs, packedKernel: packed.data, geometry: g, image: image.data,
                              planes: planes.data, y: y.data)
                results.append(y)
            }
            let k = g.columnRows
            let bound = Double(k + 8) * pow(2, -24) * Double(k)   // operands within ±1
            let worst = (0..<want.count).map { abs(Double(results[0][$0]) - Double(want[$0])) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, bound, "\(g) into \(outputs)")
            XCTAssertEqual((0..<want.count).filter { !results[0][$0].isFinite }.count, 0, "\(g): outputs not written")
            XCTAssertEqual((0..<want.count).filter { results[0][$0].bitPattern != results[1][$0].bitPattern }.count, 0,
                           "\(g): 1 and 2 threads")

            // The weight gradient dy·colᵀ on the tiles: every element a sum over all output pixels.
            let dy = randomTensor([outputs * g.outPixels], seed: seed + 2000)
            let rdy = Tensor(zeros: [dy.count])
            for i in 0..<dy.count { rdy[i] = BF16.round(dy[i]) }
            let wantGradient = Tensor(zeros: [w.count])
            naiveGemm(transA: false, transB: true, m: outputs, n: k, k: g.outPixels, alpha: 1,
                      a: rdy.data, b: rcol.data, beta: 0, c: wantGradient.data)
            let gradientScratch = Tensor(zeros: [BF16.weightGradientFloats(outChannels: outputs, geometry: g)])
            var gradients: [Tensor] = []
            for threads in [1, 2] {
                BLAS.setThreads(threads)
                let dw = Tensor(zeros: [w.count])
                dw.fill(.nan)
                BF16.convolutionWeightGradient(outChannels: outputs, geometry: g, image: image.data, dy: dy.data,
                                               scratch: gradientScratch.data, dw: dw.data)
                gradients.append(dw)
            }
            let pixels = g.outPixels
            let gradientBound = Double(pixels + 8) * pow(2, -24) * Double(pixels)
            let (gradientWorst, at) = (0..<w.count).map { (abs(Double(gradients[0][$0]) - Double(wantGradient[$0])), $0) }
                .max { $0.0 < $1.0 } ?? (0, 0)
            XCTAssertLessThanOrEqual(gradientWorst, gradientBound, "\(g) into \(outputs): weight gradient at \(at)")
            XCTAssertEqual((0..<w.count).filter { !gradients[0][$0].isFinite }.count, 0,
                           "\(g): weight gradient elements not written")
            XCTAssertEqual((0..<w.count).filter { gradients[0][$0].bitPattern != gradients[1][$0].bitPattern }.count, 0,
                           "\(g): weight gradient, 1 and 2 threads")

            // w read as the kernel (channels × outputs × k × k) of a forward whose input gradient this is.
            let flipped = Tensor(zeros: [w.count])
            for o in 0..<outputs {
                for c in 0..<channels {
                    for i in 0..<kernel {
                        for j in 0..<kernel {
                            flipped[((o * channels + c) * kernel + i) * kernel + j] =
                                w[((c * outputs + o) * kernel + kernel - 1 - i) * kernel + kernel - 1 - j]
                        }
                    }
                }
            }
            let packedFlipped = Tensor(zeros: [floats.kernel])
            BF16.packConvolutionKernel(outChannels: outputs, geometry: g, weights: w.data, flipped: true,
                                       into: packedFlipped.data)
            BF16.packConvolutionKernel(outChannels: outputs, geometry: g, weights: flipped.data, into: packed.data)
            XCTAssertEqual((0..<floats.kernel).filter { packed[$0].bitPattern != packedFlipped[$0].bitPattern }.count,
                           0, "\(g): flipped packing")
        }
    }

    func testRoundsToNearestEven() {
        let one = Float(1), ulp = Float(pow(2.0, -7.0))   // bf16 spacing at 1
        XCTAssertEqual(BF16.round(one + ulp / 2), one, "a tie rounds to the even neighbour (down)")
        XCTAssertEqual(BF16.round(one + 3 * ulp / 2), one + 2 * ulp, "a tie rounds to the even neighbour (up)")
        XCTAssertEqual(BF16.round(one + ulp / 2 + ulp / 64), one + ulp, "above the tie rounds up")
        XCTAssertTrue(BF16.round(.nan).isNaN)
        XCTAssertEqual(BF16.round(.infinity), .infinity)
    }
}
