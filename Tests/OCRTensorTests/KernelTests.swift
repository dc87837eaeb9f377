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

    func testPlaneSumsAgreeWithDoubleSumsAndDependOnThePlaneAlone() {
        // Lengths around the 16-lane width and the 1024-element block, including empty and tail-only runs.
        for count in [0, 5, 16, 17, 1023, 1024, 1040, 5000] {
            let x = randomTensor([max(count, 1)], seed: UInt64(count) + 1)
            for i in 0..<count { x[i] += 3 }   // a mean well away from 0, as after a convolution
            var (sum, squares) = (0.0, 0.0)
            for i in 0..<count { sum += Double(x[i]) }
            let mean = count > 0 ? sum / Double(count) : 0
            for i in 0..<count { squares += (Double(x[i]) - Double(Float(mean))) * (Double(x[i]) - Double(Float(mean))) }
            let fastSum = PlaneSums.sum(x.data, count: count)
            let fastSquares = PlaneSums.squaredDeviations(x.data, count: count, mean: Float(mean))
            XCTAssertEqual(fastSum, sum, accuracy: 1e-6 * max(1, abs(sum)), "Σx over \(count)")
            XCTAssertEqual(fastSquares, squares, accuracy: 1e-6 * max(1, squares), "Σ(x−μ)² over \(count)")
            // The same values at another address (as when a batch is split over ranks) give the same bits.
            let moved = Tensor(zeros: [count + 3])
            (moved.data + 3).update(from: x.data, count: count)
            XCTAssertEqual(PlaneSums.sum(moved.data + 3, count: count), fastSum, "Σx moved, \(count)")
        }
    }

    func testPlaneSumsForEachVisitsEveryElementOnce() {
        for count in [0, 3, 16, 33] {
            var visits = [Int](repeating: 0, count: count)
            PlaneSums.forEach(count: count, lanes: { i in for l in 0..<16 { visits[i + l] += 1 } },
                              single: { visits[$0] += 1 })
            XCTAssertEqual(visits, [Int](repeating: 1, count: count), "count \(count)")
        }
    }

    func testProfilerCountsNestedRegionsOnceAndForwardFlopsOnlyWhenEnabled() {
        Profiler.reset()
        Profiler.countForwardFlops(100)
        XCTAssertEqual(Profiler.forwardFlops, 0)
        Profiler.enabled = true
        defer { Profiler.enabled = false; Profiler.reset() }
        let outer = Profiler.begin()
        let inner = Profiler.begin()
        usleep(20_000)
        Profiler.end("inner", inner)
        Profiler.countForwardFlops(100)
        Profiler.end("outer", outer)
        let rows = Dictionary(uniqueKeysWithValues: Profiler.report.map { ($0.name, $0.seconds) })
        XCTAssertGreaterThanOrEqual(rows["inner"] ?? 0, 0.02)
        XCTAssertLessThan(rows["outer"] ?? 1, 0.01, "the outer region's own time excludes the inner region")
        XCTAssertEqual(Profiler.forwardFlops, 100)
    }

    func testTransientTensorsRecycleTheirStorageBestFit() {
        let pool = TensorPool()
        var first: Tensor? = pool.tensor(shape: [3, 1000])
        let storage = first!.data
        first = nil
        XCTAssertGreaterThanOrEqual(pool.freeFloats, 3000, "a released transient tensor returns its storage")
        let again = pool.tensor(shape: [2, 1000])
        XCTAssertEqual(again.data, storage, "a smaller request reuses the free block")
        let small = pool.tensor(shape: [10])
        XCTAssertNotEqual(small.data, storage, "a tiny request does not pin a block many times its size")
        again.fill(1)
        XCTAssertEqual(again.count, 2000)
    }

    /// After an evaluation the trainer frees what no tensor holds; tensors still alive keep their storage and
    /// recycle into the pool as before.
    func testReleaseFreeKeepsLiveTensors() {
        let pool = TensorPool()
        var large: Tensor? = pool.tensor(shape: [4, 1 << 20])
        let live = pool.tensor(shape: [1000])
        live.fill(2)
        large = nil
        XCTAssertGreaterThanOrEqual(pool.freeFloats, 4 << 20)
        pool.releaseFree()
        XCTAssertEqual(pool.freeFloats, 0)
        XCTAssertNil(large)
        XCTAssertEqual(live[999], 2)
    }
}
