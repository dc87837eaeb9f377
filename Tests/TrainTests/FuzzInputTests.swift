import Foundation
import OCRData
import OCRTensor
import OCRTestSupport
import OCRTrain
import XCTest

/// The fuzz targets' parsers on their committed inputs (Fuzz/, Launch/fuzz.sh): every seed of Fuzz/Corpus parses,
/// and every input of Fuzz/Regressions (what once crashed a parser, or was made to lie about its sizes) is refused
/// with an error.
final class FuzzInputTests: XCTestCase {
    var fuzz: URL { Fixtures.directory.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fuzz") }

    /// The parsers in the fuzz targets' order, each throwing what it throws.
    let parsers: [String: ([UInt8]) throws -> Void] = [
        "safetensors": { bytes in
            let file = try SafetensorsFile(path: "input", contents: Data(bytes))
            for name in file.names where try file.entry(name).dtype != .i64 { _ = try file.floats(name) }
        },
        "png": { bytes in _ = try ImageCodec.decodeRGB(bytes, path: "input") },
        "jpeg": { bytes in _ = try ImageCodec.decodeRGB(bytes, path: "input") },
        "config": { bytes in
            _ = try ExperimentConfig(tree: try ConfigValue(yaml: String(decoding: bytes, as: UTF8.self), source: "input"))
        },
        "trainer-state": { bytes in _ = try CheckpointStore.parseState(Data(bytes), path: "input") },
    ]

    func inputs(_ folder: String, _ target: String) -> [URL] {
        let directory = fuzz.appendingPathComponent("\(folder)/\(target)")
        return ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).sorted()
            .filter { !$0.hasPrefix(".") }.map { directory.appendingPathComponent($0) }
    }

    func testSeedsParseAndRegressionsAreRefused() throws {
        var seeds = 0
        for (target, parse) in parsers {
            for url in inputs("Corpus", target) {
                XCTAssertNoThrow(try parse([UInt8](try Data(contentsOf: url))), "seed \(url.lastPathComponent)")
                seeds += 1
            }
            for url in inputs("Regressions", target) {
                XCTAssertThrowsError(try parse([UInt8](try Data(contentsOf: url))), "regression \(url.lastPathComponent)")
            }
        }
        XCTAssertGreaterThanOrEqual(seeds, 10)
    }

    /// A label value outside the classes names the file and the pixel.
    func testLabelValuesOutsideTheClassesNameThePixel() {
        let label = LabelImage(width: 4, height: 2, values: [0, 1, 2, 40, 255, 3, 4, 5])
        XCTAssertThrowsError(try LabelEncoding.identity.trainIds(label, classCount: 19, path: "a_labelTrainIds.png")) {
            XCTAssertEqual("\($0)", "a_labelTrainIds.png: label value 40 at x=3, y=0 is outside 0..<19 and not 255 (ignore)")
        }
        XCTAssertEqual(try LabelEncoding.identity.trainIds(label, classCount: 41, path: "p").values, label.values)
    }
}
