import Foundation
import OCRModel
import OCRTensor
import OCRTestSupport
import OCRTrain
import XCTest

/// Slide and flip inference against independent constructions of what they must compute.
final class InferenceTests: XCTestCase {
    func model() -> OCRNet {
        var c = ModelConfig()
        c.depth = 18; c.baseChannels = 8; c.fcnChannels = 16; c.ocrChannels = 16; c.ocrMidChannels = 8; c.numClasses = 4
        let m = OCRNet(config: c, seed: 3)
        m.forward(randomTensor([2, 3, 32, 32], seed: 4))   // move BN running statistics away from 0/1
        m.training = false
        return m
    }

    func config(_ overrides: [String]) throws -> ExperimentConfig {
        try ExperimentConfig.load(path: nil, overrides: ["model.num_classes=4"] + overrides)
    }

    /// Windows that tile the image exactly (64×64, crop = stride = 32) give, per window, the model's logits on that
    /// window alone.
    func testSlideInferenceTilesWindowLogits() throws {
        let m = model()
        let image = randomTensor([1, 3, 64, 64], seed: 5)
        let slide = Inference(model: m, config: try config(["model.test_cfg={mode: slide, crop_size: [32, 32], stride: [32, 32]}"]))
        let probabilities = slide.probabilities(image, outHeight: 64, outWidth: 64)
        let whole = Inference(model: m, config: try config([]))
        for (y0, x0) in [(0, 0), (0, 32), (32, 0), (32, 32)] {
            let window = Tensor(zeros: [1, 3, 32, 32])
            for c in 0..<3 { for y in 0..<32 { for x in 0..<32 { window[(c * 32 + y) * 32 + x] = image[(c * 64 + y0 + y) * 64 + x0 + x] } } }
            let expected = whole.probabilities(window, outHeight: 32, outWidth: 32)
            let got = Tensor(zeros: [1, 4, 32, 32])
            for c in 0..<4 { for y in 0..<32 { for x in 0..<32 { got[(c * 32 + y) * 32 + x] = probabilities[(c * 64 + y0 + y) * 64 + x0 + x] } } }
            let d = compare("window (\(y0), \(x0))", got, expected)
            XCTAssertLessThan(d.maxAbsDiff, 1e-6, d.description)
        }
    }

    /// Flip test-time augmentation averages the prediction of the image and the un-flipped prediction of its mirror,
    /// so the result for a mirrored image is exactly the mirror of the result for the image.
    func testFlipAugmentationIsMirrorSymmetric() throws {
        let m = model()
        let image = randomTensor([1, 3, 40, 48], seed: 6)
        let mirrored = Tensor(zeros: image.shape)
        for r in 0..<(3 * 40) { for x in 0..<48 { mirrored[r * 48 + x] = image[r * 48 + 47 - x] } }
        let flip = Inference(model: m, config: try config(["model.test_cfg={mode: whole, flip: true}"]))
        let a = flip.probabilities(image, outHeight: 40, outWidth: 48)
        let b = flip.probabilities(mirrored, outHeight: 40, outWidth: 48)
        let bMirrored = Tensor(zeros: b.shape)
        for r in 0..<(4 * 40) { for x in 0..<48 { bMirrored[r * 48 + x] = b[r * 48 + 47 - x] } }
        let d = compare("flip TTA symmetry", a, bMirrored)
        XCTAssertLessThan(d.maxAbsDiff, 1e-6, d.description)
        let plain = Inference(model: m, config: try config([])).probabilities(image, outHeight: 40, outWidth: 48)
        XCTAssertGreaterThan(compare("flip changes the result", a, plain).maxAbsDiff, 1e-6,
                             "the model is not mirror symmetric, so TTA must differ from one view")
    }
}
