import OCRModel
import OCRNN
import OCRTensor
import OCRTestSupport
import XCTest

/// One bf16 training step of the reduced R50-D8 OCRNet against float64 truth, bounded by 1.5× PyTorch's own
/// bf16-autocast error on the same weights and batch (`python3 Tools/make_golden.py --bf16`, torch 2.15 CPU).
/// The FCN classifier is at std 1.0: at mmseg's 0.01 the OCR softmax is near-uniform and PyTorch's bf16 step lands
/// 1.8 from the truth, further than no step at all (docs/TESTING.md "bf16"), which would bound nothing.
final class BF16ModelParityTests: XCTestCase {
    /// PyTorch bf16 autocast on this fixture: gradient relative norm over the whole update and on its worst tensor
    /// (backbone.layer4.1.bn2.bias), relative loss error, worst BN running statistic (relative norm).
    let pytorchWholeGradient = 0.2863, pytorchWorstTensor = 0.6558, pytorchLoss = 7.371e-4, pytorchStatistics = 2.447e-2
    let allowedRatio = 1.5

    struct StepErrors { var wholeGradient = 0.0, worstTensor = 0.0, worstName = "", loss = 0.0, statistics = 0.0 }

    func step(_ precision: Precision) throws -> StepErrors {
        let f = try Fixtures.file("bf16/r50_fcn_std1.safetensors")
        let meta = { (key: String) in Int(f.metadata[key]!)! }
        var config = ModelConfig()
        config.depth = meta("depth"); config.baseChannels = meta("base_channels")
        config.fcnChannels = meta("fcn_channels"); config.ocrChannels = meta("ocr_channels")
        config.ocrMidChannels = meta("ocr_mid_channels"); config.numClasses = meta("num_classes")
        config.fcnDropout = 0; config.ocrDropout = 0
        // The fixture's reference computes the loss as the official HRNet-OCR code does (Tools/make_golden.py).
        config.auxLoss.averageOverNonIgnored = true; config.ocrLoss.averageOverNonIgnored = true
        config.fcnPasses = 1
        let model = OCRNet(config: config)
        XCTAssertTrue(try model.store.loadStateDict(from: f, prefix: "param.").isComplete)
        model.store.trainingPrecision = precision
        let labelEntry = try f.entry("label")
        let labels = LabelMap(shape: labelEntry.shape, values: try f.int64s("label").map { Int32($0) })
        model.store.zeroGrad()
        let losses = model.step(try f.tensor("input"), labels)
        var errors = StepErrors()
        let wantLoss = Double(try f.tensor("out.loss")[0])
        errors.loss = abs(Double(losses.total) - wantLoss) / abs(wantLoss)
        var diffSquares = 0.0, refSquares = 0.0
        for p in model.store.parameters {
            let c = compare(p.name, p.grad, try f.tensor("grad.\(p.name)"))
            let truth = try f.tensor("grad.\(p.name)")
            let refNorm = (0..<truth.count).reduce(0.0) { $0 + Double(truth[$1]) * Double(truth[$1]) }
            diffSquares += c.relativeNorm * c.relativeNorm * refNorm
            refSquares += refNorm
            if c.relativeNorm > errors.worstTensor { (errors.worstTensor, errors.worstName) = (c.relativeNorm, p.name) }
        }
        errors.wholeGradient = (diffSquares / refSquares).squareRoot()
        for case .buffer(let b) in model.store.entries {
            errors.statistics = max(errors.statistics, compare(b.name, b.value, try f.tensor("after.\(b.name)")).relativeNorm)
        }
        print(String(format: "%@: gradient %.3e whole, %.3e worst (%@); loss %.2e; BN statistics %.2e",
                     precision.rawValue, errors.wholeGradient, errors.worstTensor, errors.worstName, errors.loss,
                     errors.statistics))
        return errors
    }

    func testBF16StepIsWithinPyTorchBF16Error() throws {
        let bf16 = try step(.bfloat16)
        print(String(format: "ratios to PyTorch bf16: whole %.2f, worst tensor %.2f, loss %.2f, statistics %.2f",
                     bf16.wholeGradient / pytorchWholeGradient, bf16.worstTensor / pytorchWorstTensor,
                     bf16.loss / pytorchLoss, bf16.statistics / pytorchStatistics))
        XCTAssertLessThanOrEqual(bf16.wholeGradient, allowedRatio * pytorchWholeGradient)
        XCTAssertLessThanOrEqual(bf16.worstTensor, allowedRatio * pytorchWorstTensor, bf16.worstName)
        XCTAssertLessThanOrEqual(bf16.loss, allowedRatio * pytorchLoss)
        XCTAssertLessThanOrEqual(bf16.statistics, allowedRatio * pytorchStatistics)
        // The same fixture in fp32 lands where docs/TESTING.md's whole-model bounds put a correct fp32 step, so the
        // bf16 errors above are bf16's, not the fixture's.
        let fp32 = try step(.float32)
        XCTAssertLessThanOrEqual(fp32.wholeGradient, 2e-2)
        XCTAssertLessThanOrEqual(fp32.loss, 1e-5)
        XCTAssertGreaterThan(bf16.wholeGradient, 10 * fp32.wholeGradient, "the bf16 step showed no bf16 rounding")
    }
}
