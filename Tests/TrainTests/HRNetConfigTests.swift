import Foundation
import OCRModel
import OCRTestSupport
import OCRTrain
import XCTest

/// The shipped HRNet-OCR configs read into exactly mmseg's ocrnet_hr18 / hr18s / hr48 models.
final class HRNetConfigTests: XCTestCase {
    let configs = Fixtures.directory.deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Configs")

    func load(_ name: String, _ overrides: [String] = []) throws -> ExperimentConfig {
        try ExperimentConfig.load(path: configs.appendingPathComponent("\(name).yaml").path, overrides: overrides)
    }

    func testShippedHRNetConfigsGiveMMSegModels() throws {
        let expected: [(String, HRNetConfig, Int, Int)] = [
            ("ocrnet_hr18s_4xb2-40k_cityscapes-512x1024", .w18Small, 19, 40000),
            ("ocrnet_hr18_4xb2-80k_cityscapes-512x1024", .w18, 19, 80000),
            ("ocrnet_hr48_4xb2-80k_cityscapes-512x1024", .w48, 19, 80000),
            ("ocrnet_hr18_4xb4-80k_ade20k-512x512", .w18, 150, 80000),
            ("ocrnet_hr48_4xb4-20k_voc12aug-512x512", .w48, 21, 20000),
        ]
        for (name, hrnet, classes, iterations) in expected {
            let c = try load(name)
            XCTAssertEqual(c.model, .hrnet(hrnet, numClasses: classes), name)
            XCTAssertEqual(c.maxIters, iterations, name)
            XCTAssertEqual(c.valInterval, iterations / 10, name)
        }
    }

    func testHRNetKeysThatDoNotFitAreErrorsNamingTheKey() {
        func error(_ overrides: [String]) -> String {
            do { _ = try load("ocrnet_hr18_4xb2-80k_cityscapes-512x1024", overrides); return "no error" } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(error(["model.backbone.extra.stage3.num_channels=[20, 36, 72]"])
            .contains("model.backbone.extra.stage3.num_channels"))
        XCTAssertTrue(error(["model.backbone.extra.stage2.block=BASICC"]).contains("stage2.block"))
        XCTAssertTrue(error(["model.decode_head.0.in_index=[0, 1]"]).contains("decode_head.0.in_index"))
        XCTAssertTrue(error(["model.decode_head.1.in_channels=[48, 96, 192, 384]"]).contains("decode_head.1.in_channels"))
        XCTAssertTrue(error(["model.decode_head.0.concat_input=true"]).contains("concat_input"))
        let misspelt = error(["model.backbone.extra.stage4.num_blockz=[4, 4, 4, 4]"])
        XCTAssertTrue(misspelt.contains("unknown config key 'model.backbone.extra.stage4.num_blockz"), misspelt)
        XCTAssertEqual(error(["model.decode_head.0.kernel_size=3"]), "no error")
    }
}
