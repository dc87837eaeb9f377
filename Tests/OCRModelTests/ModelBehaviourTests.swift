import Foundation
import OCRModel
import OCRNN
import OCRTensor
import OCRTestSupport
import XCTest

/// Initialisation of docs/MODEL.md, layout facts the distributed layer relies on, and train/eval behaviour.
final class ModelBehaviourTests: XCTestCase {
    func parameter(_ model: OCRNet, _ name: String) -> Parameter {
        model.store.parameters.first { $0.name == name }!
    }

    func standardDeviation(_ t: Tensor) -> Double {
        let n = Double(t.count)
        let mean = (0..<t.count).reduce(0.0) { $0 + Double(t[$1]) } / n
        return ((0..<t.count).reduce(0.0) { $0 + pow(Double(t[$1]) - mean, 2) } / n).squareRoot()
    }

    func testInitialisationFollowsMMSeg() {
        var config = ModelConfig()
        config.depth = 50
        config.baseChannels = 16
        let model = OCRNet(config: config, seed: 3)
        // Kaiming normal fan_out: std √(2 / (O·k·k)); layer3.1.conv2 is 64×64×3×3.
        let kaimingStd: Double = (2.0 / 576.0).squareRoot()
        let measured = standardDeviation(parameter(model, "backbone.layer3.1.conv2.weight").value)
        XCTAssertEqual(measured, kaimingStd, accuracy: 0.05 * kaimingStd)
        XCTAssertEqual(standardDeviation(parameter(model, "decode_head.1.conv_seg.weight").value), 0.01,
                       accuracy: 0.002)
        XCTAssertEqual(parameter(model, "decode_head.1.conv_seg.bias").value.array, Array(repeating: 0, count: 19))
        // zero_init_residual: the last BN of every residual branch starts at γ = 0; the others at 1.
        XCTAssertEqual(parameter(model, "backbone.layer2.3.bn3.weight").value.array.max(), 0)
        XCTAssertEqual(parameter(model, "backbone.layer2.3.bn2.weight").value.array.min(), 1)
        XCTAssertEqual(parameter(model, "backbone.layer1.0.downsample.1.weight").value.array.min(), 1)
        for entry in model.store.entries {
            if case .buffer(let b) = entry {
                XCTAssertEqual(b.value.array.max(), b.name.hasSuffix("running_var") ? 1 : 0, b.name)
            }
        }
        XCTAssertEqual(OCRNet(config: config, seed: 3).store.values.array, model.store.values.array,
                       "the same seed gives the same weights")
    }

    /// Backward finishes gradients front to back in the flat buffer, so contiguous buckets complete in order.
    func testBackwardFinishesGradientsInFlatBufferOrder() {
        let model = OCRNet(config: StateDictTests.small(depth: 50), seed: 1)
        var offsets: [Int] = []
        model.store.gradientReady = { offsets.append($0.offset) }
        let x = randomTensor([2, 3, 32, 48], seed: 2)
        _ = model.step(x, LabelMap(shape: [2, 32, 48], values: Array(repeating: 1, count: 2 * 32 * 48)))
        XCTAssertEqual(offsets.count, model.store.parameters.count, "every parameter reported once")
        XCTAssertEqual(offsets, offsets.sorted(), "gradients complete front to back")
        XCTAssertEqual(offsets.first, 0)
        XCTAssertEqual(model.store.parametersByOffset.first?.name, "decode_head.1.conv_seg.bias")
        XCTAssertEqual(model.store.parametersByOffset.last?.name, "backbone.stem.0.weight")
    }

    /// mmseg's cascade runs the FCN head twice per training step: the aux loss sees the first dropout mask, the OCR
    /// head a second one, and the head's BN counts two batches. Against one pass from the same weights and seed the
    /// aux logits agree and the OCR logits do not. The aux loss's gradient, with the masks held fixed, matches finite
    /// differences through the first pass (the OCR path is too curved for float32 differences: its region softmax
    /// and projection ReLUs; the mmseg parity tests cover it without dropout).
    func testTwoFCNPassesDrawTwoDropoutMasksAndCountTwoBatches() {
        var config = StateDictTests.small()
        config.fcnDropout = 0.5; config.ocrDropout = 0
        config.ocrLoss.weight = 0   // the differentiated loss is the aux term alone
        var single = config
        single.fcnPasses = 1
        let (twice, once) = (OCRNet(config: config, seed: 5), OCRNet(config: single, seed: 5))
        let x = randomTensor([2, 3, 32, 32], seed: 6)
        let keys: [UInt64] = [40, 41]
        let (auxTwice, ocrTwice) = twice.forward(x, sampleKeys: keys)
        let (auxOnce, ocrOnce) = once.forward(x, sampleKeys: keys)
        XCTAssertEqual(auxTwice.array, auxOnce.array, "the first pass uses the first mask in both")
        XCTAssertNotEqual(ocrTwice.array, ocrOnce.array, "the OCR head reads the second mask's regions")
        let counter = { (model: OCRNet) in
            model.store.entries.compactMap { entry -> Int64? in
                if case .counter(let c) = entry, c.name == "decode_head.0.convs.0.bn.num_batches_tracked" { return c.value }
                return nil
            }.first!
        }
        XCTAssertEqual(counter(twice), 2)
        XCTAssertEqual(counter(once), 1)

        var rng = SplitMix64(seed: 7)
        let labels = LabelMap(shape: [2, 32, 32], values: (0..<2048).map { _ in
            rng.uniform() < 0.1 ? 255 : Int32(rng.next() % UInt64(config.numClasses))
        })
        func loss() -> Double {
            twice.forward(x, sampleKeys: keys)   // the same two masks at every evaluation
            return Double(twice.loss(labels).aux)
        }
        twice.store.zeroGrad()
        _ = loss()
        twice.backward()
        for name in ["decode_head.0.conv_seg.weight", "decode_head.0.conv_seg.bias"] {
            let p = parameter(twice, name)
            let mismatches = finiteDifferenceMismatches(name, variable: p.value, analytic: p.grad.clone(),
                                                        step: 1e-2, tolerance: 3e-2, loss: loss)
            XCTAssertTrue(mismatches.isEmpty, "\(mismatches)")
        }
    }

    func testEvalModeUsesRunningStatisticsAndLeavesThemUnchanged() {
        let model = OCRNet(config: StateDictTests.small(), seed: 4)
        let x = randomTensor([1, 3, 32, 32], seed: 5)
        model.forward(x)                            // training: statistics move
        model.training = false
        let stateBefore = model.store.entries.compactMap { e -> [Float]? in
            if case .buffer(let b) = e { return b.value.array } else { return nil }
        }
        let first = model.forward(x).ocr.array
        let second = model.forward(x).ocr.array
        XCTAssertEqual(first, second, "eval is deterministic")
        let stateAfter = model.store.entries.compactMap { e -> [Float]? in
            if case .buffer(let b) = e { return b.value.array } else { return nil }
        }
        XCTAssertEqual(stateBefore, stateAfter, "eval must not touch running statistics")
        // One image alone in eval gives the same logits as inside a batch (no batch statistics involved).
        let pair = Tensor(zeros: [2, 3, 32, 32])
        pair.data.update(from: x.data, count: x.count)
        (pair.data + x.count).update(from: randomTensor([1, 3, 32, 32], seed: 6).data, count: x.count)
        let batched = model.forward(pair).ocr
        let c = compare("image 0 in a batch", Tensor(viewOf: batched, offset: 0, shape: [first.count]),
                        Tensor(shape: [first.count], values: first))
        XCTAssertLessThan(c.relativeMax, 1e-5, c.description)
    }

    func testOddInputSizesRunAndGradientsAccumulate() {
        var config = StateDictTests.small(depth: 50)
        config.fcnDropout = 0   // dropout draws a new mask each step; without it two steps see the same network
        config.ocrDropout = 0
        let model = OCRNet(config: config, seed: 7)
        let x = randomTensor([2, 3, 37, 45], seed: 8)
        var rng = SplitMix64(seed: 9)
        let labels = LabelMap(shape: [2, 37, 45], values: (0..<(2 * 37 * 45)).map { _ in
            rng.uniform() < 0.1 ? 255 : Int32(rng.next() % 5)
        })
        let (aux, ocr) = model.forward(x)
        XCTAssertEqual(aux.shape, [2, 5, 5, 6])
        XCTAssertEqual(ocr.shape, [2, 5, 5, 6])
        model.store.zeroGrad()
        _ = model.step(x, labels)
        let once = model.store.grads.array
        XCTAssertTrue(once.allSatisfy(\.isFinite))
        XCTAssertGreaterThan(once.map(abs).max()!, 0)
        _ = model.step(x, labels)
        let twice = model.store.grads.array
        var worst: Float = 0
        for i in 0..<once.count { worst = max(worst, abs(twice[i] - 2 * once[i])) }
        // BN statistics move between the steps only through running stats (unused in training), so the second
        // step's gradient equals the first: accumulation doubles it.
        XCTAssertLessThan(worst, 1e-4 * once.map(abs).max()!)
    }
}
