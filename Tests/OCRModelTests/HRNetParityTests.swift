import Foundation
import OCRModel
import OCRNN
import OCRTensor
import OCRTestSupport
import XCTest

/// HRNetV2-OCR presets and shapes (mmseg `HRNet` + `ocrnet_hr18` heads); the numbers against real mmseg are
/// TrainTests/MMSegParityTests.
final class HRNetParityTests: XCTestCase {
    /// A reduced HRNetV2-OCR: branch widths width·2^i, one module in stages 3 and 4, `stage1` channels in layer1's
    /// blocks, the OCR head's channels and mid channels `ocr`.
    static func small(width: Int, blocks: Int, stage1: Int, classes: Int, ocr: (Int, Int)) -> ModelConfig {
        var hrnet = HRNetConfig.v2(width: width, blocks: blocks, stage3Modules: 1, stage4Modules: 1)
        hrnet.stages[0].numChannels = [stage1]
        var config = ModelConfig.hrnet(hrnet, numClasses: classes)
        (config.ocrChannels, config.ocrMidChannels) = ocr
        return config
    }

    /// mmseg's published widths: the concatenation is 270 channels for W18 and W18-small, 720 for W48; hr18s has
    /// 2 blocks per branch and 3 / 2 modules in stages 3 / 4.
    func testPresetsMatchMMSegConfigs() throws {
        XCTAssertEqual(ModelConfig.hrnet(.w18).fcnChannels, 270)
        XCTAssertEqual(ModelConfig.hrnet(.w18Small).fcnChannels, 270)
        XCTAssertEqual(ModelConfig.hrnet(.w48).fcnChannels, 720)
        XCTAssertEqual(HRNetConfig.w18Small.stages.map(\.numModules), [1, 1, 3, 2])
        XCTAssertEqual(HRNetConfig.w18Small.stages.map(\.numBlocks), [[2], [2, 2], [2, 2, 2], [2, 2, 2, 2]])
        XCTAssertEqual(HRNetConfig.w18.stages.map(\.numModules), [1, 1, 4, 3])
        XCTAssertEqual(HRNetConfig.w48.outChannels, [48, 96, 192, 384])
        for preset in [HRNetConfig.w18Small, .w18, .w48] { XCTAssertNoThrow(try ModelConfig.hrnet(preset).validate()) }
        var wrong = HRNetConfig.w18
        wrong.stages[2].numChannels = [20, 36, 72]
        XCTAssertThrowsError(try wrong.validate()) { error in
            XCTAssertTrue("\(error)".contains("stage3.num_channels"), "\(error)")
        }
        wrong = HRNetConfig.w18
        wrong.stages[3].numBlocks = [4, 4, 4]
        XCTAssertThrowsError(try wrong.validate())
    }

    /// At sizes that are not multiples of 32 the strided branches round up, so the upsampled lower branches
    /// overshoot and are resized again to the higher branch (mmseg's Upsample + resize); the logits stay at the
    /// 1/4 branch's size and backward runs, reporting every gradient once in flat-buffer order.
    func testOddInputSizeAndBackwardOrder() {
        let model = OCRNet(config: Self.small(width: 4, blocks: 1, stage1: 8, classes: 3, ocr: (8, 4)), seed: 5)
        var offsets: [Int] = []
        model.store.gradientReady = { offsets.append($0.offset) }
        let (h, w) = (45, 38)
        let labels = LabelMap(shape: [2, h, w], values: (0..<(2 * h * w)).map { Int32($0 % 3) })
        let losses = model.step(randomTensor([2, 3, h, w], seed: 6), labels)
        XCTAssertTrue(losses.total.isFinite)
        XCTAssertEqual(model.features.map { [$0.shape[2], $0.shape[3]] }, [[12, 10], [6, 5], [3, 3], [2, 2]])
        XCTAssertEqual(model.ocrLogits!.shape, [2, 3, 12, 10])
        XCTAssertEqual(offsets.count, model.store.parameters.count, "every parameter reported once")
        XCTAssertEqual(offsets, offsets.sorted(), "gradients complete front to back")
    }
}
