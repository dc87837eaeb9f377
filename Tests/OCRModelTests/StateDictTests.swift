import Foundation
import OCRModel
import OCRNN
import OCRTensor
import OCRTestSupport
import XCTest

final class StateDictTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = try makeTemporaryDirectory("ocr-ddp-sd")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    static func small(depth: Int = 18, classes: Int = 5) -> ModelConfig {
        var c = ModelConfig()
        c.depth = depth; c.baseChannels = 8; c.fcnChannels = 16; c.ocrChannels = 16; c.ocrMidChannels = 8
        c.numClasses = classes
        return c
    }

    func testSaveThenLoadRestoresEveryParameterBufferAndCounter() throws {
        let source = OCRNet(config: Self.small(), seed: 1)
        source.forward(randomTensor([2, 3, 32, 32], seed: 2))   // moves running stats and counters
        let path = directory.appendingPathComponent("model.safetensors").path
        try source.store.saveStateDict(to: path)
        let target = OCRNet(config: Self.small(), seed: 99)
        let report = try target.store.loadStateDict(from: SafetensorsFile(path: path))
        XCTAssertTrue(report.isComplete, "\(report)")
        XCTAssertEqual(report.loaded.count, source.store.entries.count)
        XCTAssertEqual(target.store.values.array, source.store.values.array)
        for (a, b) in zip(source.store.entries, target.store.entries) {
            switch (a, b) {
            case (.buffer(let x), .buffer(let y)): XCTAssertEqual(x.value.array, y.value.array, x.name)
            case (.counter(let x), .counter(let y)):
                // The FCN head's BN counts its batch twice (mmseg's cascade runs that head twice per step).
                let batches: Int64 = x.name.hasPrefix("decode_head.0.") ? 2 : 1
                XCTAssertEqual(x.value, batches, x.name); XCTAssertEqual(y.value, batches, y.name)
            case (.parameter, .parameter): break
            default: XCTFail("layouts differ at \(a.name) / \(b.name)")
            }
        }
    }

    /// A backbone-only file (as from ImageNet pretraining) loads the backbone, lists every head key as missing,
    /// extra keys as unexpected, and a wrongly shaped tensor by name, leaving it untouched.
    func testPartialFileReportsMissingUnexpectedAndMismatchedKeys() throws {
        let source = OCRNet(config: Self.small(), seed: 1)
        var writer = SafetensorsWriter()
        for p in source.store.parameters where p.name.hasPrefix("backbone.") && p.name != "backbone.stem.0.weight" {
            writer.add(p.name, p.value)
        }
        writer.add("backbone.stem.0.weight", Tensor(zeros: [3, 3, 3, 3]))
        writer.add("fc.weight", Tensor(zeros: [10, 4]))
        let path = directory.appendingPathComponent("backbone.safetensors").path
        try writer.write(to: path)
        let target = OCRNet(config: Self.small(), seed: 2)
        let stemBefore = target.store.parameters.first { $0.name == "backbone.stem.0.weight" }!.value.array
        let report = try target.store.loadStateDict(from: SafetensorsFile(path: path))
        XCTAssertEqual(report.unexpected, ["fc.weight"])
        XCTAssertEqual(report.mismatched.map(\.key), ["backbone.stem.0.weight"])
        XCTAssertTrue(report.missing.contains("decode_head.1.conv_seg.weight"))
        XCTAssertTrue(report.missing.contains("backbone.layer1.0.bn1.running_mean"), "buffers were not in the file")
        XCTAssertFalse(report.missing.contains { $0.hasPrefix("backbone.") && !$0.contains("running") && !$0.contains("num_batches") },
                       "every backbone parameter was in the file")
        XCTAssertEqual(target.store.parameters.first { $0.name == "backbone.stem.0.weight" }!.value.array, stemBefore)
        let loadedConv = target.store.parameters.first { $0.name == "backbone.layer2.0.conv1.weight" }!
        let sourceConv = source.store.parameters.first { $0.name == "backbone.layer2.0.conv1.weight" }!
        XCTAssertEqual(loadedConv.value.array, sourceConv.value.array)
        XCTAssertTrue("\(report)".contains("shape mismatch for backbone.stem.0.weight: file [3, 3, 3, 3], model [4, 3, 3, 3]"),
                      "\(report)")
    }
}
