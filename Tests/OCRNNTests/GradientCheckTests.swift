import OCRNN
import OCRTensor
import OCRTestSupport
import XCTest

/// Finite-difference checks of every op's backward: L = Σ y·r for a fixed random r, so ∂L/∂y = r, and central
/// differences of L w.r.t. sampled input and parameter entries must match what backward accumulates.
final class GradientCheckTests: XCTestCase {
    func assertGradient(_ name: String, _ variable: Tensor, _ analytic: Tensor, samples: Int = 24,
                        step: Float = 1e-2, tolerance: Double = 2e-2, file: StaticString = #filePath,
                        line: UInt = #line, loss: () -> Double) {
        let mismatches = finiteDifferenceMismatches(name, variable: variable, analytic: analytic, samples: samples,
                                                    step: step, tolerance: tolerance, loss: loss)
        XCTAssertTrue(mismatches.isEmpty, mismatches.prefix(5).map(\.description).joined(separator: "; "),
                      file: file, line: line)
    }

    func testConv2d() {
        for (k, s, p, d, bias) in [(3, 1, 1, 1, true), (3, 2, 1, 1, false), (3, 1, 2, 2, false), (3, 1, 4, 4, false),
                                   (1, 1, 0, 1, true), (1, 2, 0, 1, false)] {
            let store = ParameterStore()
            let conv = Conv2d(store.root.child("c"), in: 3, out: 4, kernel: k, stride: s, padding: p, dilation: d,
                              bias: bias)
            conv.algorithm = .winograd   // where the shape allows; the rest run im2col + GEMM
            store.finalize()
            store.initialize(seed: 3)
            let x = randomTensor([2, 3, 7, 6], seed: 1)
            let r = randomTensor(conv.forward(x).shape, seed: 2)
            let loss = { dot(conv.forward(x), r) }
            let dx = conv.backward(r)!.clone()
            let tag = "conv k\(k) s\(s) p\(p) d\(d)"
            assertGradient("\(tag) x", x, dx, loss: loss)
            assertGradient("\(tag) weight", conv.weight.value, conv.weight.grad, loss: loss)
            if let b = conv.bias { assertGradient("\(tag) bias", b.value, b.grad, loss: loss) }
        }
    }

    func testBatchNormTrainingWithAndWithoutReLU() {
        for relu in [false, true] {
            let store = ParameterStore()
            let bn = BatchNorm2d(store.root.child("bn"), channels: 3, relu: relu)
            store.finalize()
            bn.weight.value.update { Float($0) * 0.5 + 0.7 }
            bn.bias.value.update { Float($0) * 0.1 - 0.1 }
            let x = randomTensor([2, 3, 4, 5], seed: 5, lo: -2, hi: 2)
            let r = randomTensor(x.shape, seed: 6)
            let loss = { dot(bn.forward(x), r) }
            _ = bn.forward(x)
            let dx = bn.backward(r).clone()
            // The ReLU kink makes a few coordinates non-smooth at step 1e-2; 1e-3 steps stay on one side.
            let step: Float = relu ? 1e-3 : 1e-2
            assertGradient("bn relu=\(relu) x", x, dx, step: step, loss: loss)
            assertGradient("bn relu=\(relu) weight", bn.weight.value, bn.weight.grad, step: step, loss: loss)
            assertGradient("bn relu=\(relu) bias", bn.bias.value, bn.bias.grad, step: step, loss: loss)
        }
    }

    func testBatchNormEval() {
        let store = ParameterStore()
        let bn = BatchNorm2d(store.root.child("bn"), channels: 3)
        store.finalize()
        store.training = false
        bn.runningMean.value.update { Float($0) * 0.3 }
        bn.runningVar.value.update { Float($0) + 0.5 }
        bn.weight.value.fill(1.3)
        let x = randomTensor([2, 3, 4, 4], seed: 8)
        let r = randomTensor(x.shape, seed: 9)
        let loss = { dot(bn.forward(x), r) }
        _ = bn.forward(x)
        let dx = bn.backward(r).clone()
        assertGradient("bn eval x", x, dx, loss: loss)
        assertGradient("bn eval weight", bn.weight.value, bn.weight.grad, loss: loss)
    }

    func testReLUAndResidualAdd() {
        // Values kept away from the kink so the ±1e-2 steps never cross it.
        let a = randomTensor([2, 3, 4, 4], seed: 10)
        a.update { _ in 0 }
        var rng = SplitMix64(seed: 11)
        for i in 0..<a.count { a[i] = (rng.uniform() < 0.5 ? -1 : 1) * Float(0.1 + rng.uniform()) }
        let b = Tensor(zeros: a.shape)
        for i in 0..<b.count { b[i] = (rng.uniform() < 0.5 ? -0.02 : 0.02) }   // a + b stays on a's side
        let r = randomTensor(a.shape, seed: 12)
        let relu = ReLU()
        _ = relu.forward(a)
        assertGradient("relu", a, relu.backward(r).clone()) { dot(relu.forward(a), r) }
        let join = ResidualAddReLU()
        _ = join.forward(a, b)
        let d = join.backward(r).clone()
        assertGradient("residual a", a, d) { dot(join.forward(a, b), r) }
        assertGradient("residual b", b, d, step: 1e-3) { dot(join.forward(a, b), r) }
    }

    func testMaxPool() {
        // Distinct values spaced 0.05 apart, so a ±1e-2 step never changes which input is the maximum.
        let x = Tensor(zeros: [1, 2, 7, 8])
        var order = Array(0..<x.count)
        var rng = SplitMix64(seed: 13)
        order.shuffle(using: &rng)
        for (i, o) in order.enumerated() { x[i] = Float(o) * 0.05 }
        let pool = MaxPool2d()
        let r = randomTensor(pool.forward(x).shape, seed: 14)
        let dx = pool.backward(r).clone()
        assertGradient("maxpool", x, dx, samples: x.count) { dot(pool.forward(x), r) }
    }

    func testBilinearResize() {
        for (alignCorners, oh, ow) in [(false, 11, 9), (true, 11, 9), (false, 3, 4), (true, 3, 4)] {
            let x = randomTensor([1, 2, 5, 7], seed: 15)
            let resize = BilinearResize(alignCorners: alignCorners)
            let r = randomTensor([1, 2, oh, ow], seed: 16)
            _ = resize.forward(x, height: oh, width: ow)
            let dx = resize.backward(r).clone()
            assertGradient("resize ac=\(alignCorners) \(oh)×\(ow)", x, dx, samples: x.count) {
                dot(resize.forward(x, height: oh, width: ow), r)
            }
        }
    }

    func testSoftmax() {
        for axis in [0, 1, 2] {
            let x = randomTensor([3, 4, 5], seed: 17, lo: -3, hi: 3)
            let softmax = Softmax(axis: axis)
            let r = randomTensor(x.shape, seed: 18)
            _ = softmax.forward(x)
            let dx = softmax.backward(r).clone()
            assertGradient("softmax axis \(axis)", x, dx) { dot(softmax.forward(x), r) }
        }
    }

    func testBatchedMatMulAllTransposes() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let (batch, m, n, k) = (2, 3, 4, 5)
            let a = randomTensor([batch, ta ? k : m, ta ? m : k], seed: 19)
            let b = randomTensor([batch, tb ? n : k, tb ? k : n], seed: 20)
            let mm = BatchedMatMul(transA: ta, transB: tb, alpha: 0.7)
            let r = randomTensor([batch, m, n], seed: 21)
            let forward = { mm.forward(a, b, batch: batch, m: m, n: n, k: k, outputShape: [batch, m, n]) }
            _ = forward()
            let (da, db) = mm.backward(r)
            let (ga, gb) = (da.clone(), db.clone())
            assertGradient("matmul ta=\(ta) tb=\(tb) a", a, ga) { dot(forward(), r) }
            assertGradient("matmul ta=\(ta) tb=\(tb) b", b, gb) { dot(forward(), r) }
        }
    }

    func testChannelConcat() {
        let a = randomTensor([2, 3, 2, 2], seed: 22), b = randomTensor([2, 1, 2, 2], seed: 23)
        let concat = ChannelConcat()
        let r = randomTensor([2, 4, 2, 2], seed: 24)
        _ = concat.forward([a, b])
        let grads = concat.backward(r).map { $0.clone() }
        assertGradient("concat a", a, grads[0]) { dot(concat.forward([a, b]), r) }
        assertGradient("concat b", b, grads[1]) { dot(concat.forward([a, b]), r) }
    }

    func testDropout2dDropsWholeChannelsScaledAndKeyedBySample() {
        let store = ParameterStore()
        let dropout = Dropout2d(store.root, probability: 0.5, seed: 42)
        store.finalize()
        let x = randomTensor([4, 8, 3, 3], seed: 25, lo: 0.5, hi: 1)
        let keys: [UInt64] = [7, 8, 9, 10]
        let y = dropout.forward(x, sampleKeys: keys).clone()
        var dropped = 0
        for plane in 0..<32 {
            let values = (0..<9).map { y[plane * 9 + $0] / x[plane * 9 + $0] }
            XCTAssertTrue(values.allSatisfy { $0 == 0 } || values.allSatisfy { abs($0 - 2) < 1e-6 },
                          "channel \(plane) is neither dropped nor scaled by 1/(1−p): \(values)")
            if values[0] == 0 { dropped += 1 }
        }
        XCTAssertTrue((6...26).contains(dropped), "\(dropped) of 32 channels dropped at p = 0.5")
        XCTAssertEqual(dropout.forward(x, sampleKeys: keys).array, y.array, "the same keys give the same masks")
        XCTAssertNotEqual(dropout.forward(x, sampleKeys: [11, 12, 13, 14]).array, y.array, "other keys, other masks")
        // A sample's mask depends on its key only, not on its place in the batch: sample 2 (key 9) alone.
        let third = Tensor(viewOf: x, offset: 2 * 72, shape: [1, 8, 3, 3]).clone()
        XCTAssertEqual(dropout.forward(third, sampleKeys: [9]).array, Array(y.array[(2 * 72)..<(3 * 72)]))
        let r = randomTensor(x.shape, seed: 26)
        _ = dropout.forward(x, sampleKeys: keys)
        let dx = dropout.backward(r).clone()
        assertGradient("dropout2d", x, dx) { dot(dropout.forward(x, sampleKeys: keys), r) }
        store.training = false
        XCTAssertEqual(dropout.forward(x, sampleKeys: keys).array, x.array, "eval mode is the identity")
    }

    func testCrossEntropy() {
        let logits = randomTensor([2, 4, 3, 5], seed: 27, lo: -2, hi: 2)
        var rng = SplitMix64(seed: 28)
        let labels = LabelMap(shape: [2, 3, 5], values: (0..<30).map { _ in
            rng.uniform() < 0.2 ? 255 : Int32(rng.next() % 4)
        })
        let variants: [(String, CrossEntropyLoss)] = [
            ("mean over all pixels", CrossEntropyLoss()),
            ("mean over non-ignored", CrossEntropyLoss(averageOverNonIgnored: true)),
            ("class weights", CrossEntropyLoss(classWeights: [0.5, 1.0, 2.0, 1.5])),
            ("OHEM by loss rank", CrossEntropyLoss(sampler: HardPixelSampler(threshold: nil, minKept: 5))),
            ("OHEM by threshold", CrossEntropyLoss(sampler: HardPixelSampler(threshold: 0.3, minKept: 4))),
        ]
        for (name, ce) in variants {
            _ = ce.forward(logits, labels)
            let d = ce.backward(scale: 0.4).clone()
            // The hard-pixel choice is a constant weight (mmseg samples under no_grad); the steps stay inside it.
            assertGradient("cross entropy, \(name)", logits, d) { 0.4 * Double(ce.forward(logits, labels)) }
        }
        let allIgnored = LabelMap(shape: [2, 3, 5], values: Array(repeating: 255, count: 30))
        let ce = CrossEntropyLoss()
        XCTAssertEqual(ce.forward(logits, allIgnored), 0)
        XCTAssertEqual(ce.backward().array.map(abs).max(), 0)
    }
}

extension Tensor {
    /// Sets element i to f(i).
    func update(_ f: (Int) -> Float) { for i in 0..<count { self[i] = f(i) } }
}
