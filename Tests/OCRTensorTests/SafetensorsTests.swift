import Foundation
import OCRTensor
import OCRTestSupport
import XCTest

final class SafetensorsTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = try makeTemporaryDirectory("ocr-ddp-st")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    func testRoundTripKeepsNamesOrderShapesValuesAndMetadata() throws {
        var writer = SafetensorsWriter()
        let a = randomTensor([2, 3, 4], seed: 1), b = randomTensor([5], seed: 2)
        writer.add("z.first", a)
        writer.add("a.second", b)
        writer.add("counter", int64s: [1234567890123], shape: [])
        writer.metadata = ["format": "pt", "note": "quote \" and backslash \\"]
        let path = directory.appendingPathComponent("x.safetensors").path
        try writer.write(to: path)
        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(file.names, ["z.first", "a.second", "counter"])
        XCTAssertEqual(try file.tensor("z.first").shape, [2, 3, 4])
        XCTAssertEqual(try file.tensor("z.first").array, a.array)
        XCTAssertEqual(try file.tensor("a.second").array, b.array)
        XCTAssertEqual(try file.int64s("counter"), [1234567890123])
        XCTAssertEqual(try file.entry("counter").shape, [])
        XCTAssertEqual(file.metadata, writer.metadata)
        let headerLength = try Data(contentsOf: URL(fileURLWithPath: path)).prefix(8)
            .withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual(headerLength % 8, 0, "header is padded to a multiple of 8 bytes")
        XCTAssertEqual(writer.serialized(), try Data(contentsOf: URL(fileURLWithPath: path)), "deterministic bytes")
    }

    /// Files written by Python's safetensors (the fixtures) read back with the values PyTorch saved.
    func testReadsFilesWrittenByPythonSafetensors() throws {
        let f = try Fixtures.file("ops/ce_plain.safetensors")
        XCTAssertEqual(try f.tensor("logits").shape, [2, 5, 6, 7])
        XCTAssertEqual(try f.entry("label").dtype, .i64)
        XCTAssertEqual(f.metadata["ignore_index"], "255")
    }

    func testCorruptFilesGiveErrorsNamingTheFileAndProblem() throws {
        var writer = SafetensorsWriter()
        writer.add("w", randomTensor([16, 16], seed: 3))
        let data = writer.serialized()
        let truncated = directory.appendingPathComponent("truncated.safetensors").path
        try data.prefix(data.count - 10).write(to: URL(fileURLWithPath: truncated))
        XCTAssertThrowsError(try SafetensorsFile(path: truncated)) { error in
            XCTAssertTrue("\(error)".hasPrefix(truncated), "\(error)")
            XCTAssertTrue("\(error)".contains("'w'"), "\(error)")
        }
        let garbage = directory.appendingPathComponent("garbage.safetensors").path
        try Data([200, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]).write(to: URL(fileURLWithPath: garbage))
        XCTAssertThrowsError(try SafetensorsFile(path: garbage)) { XCTAssertTrue("\($0)".contains("truncated")) }
        XCTAssertThrowsError(try SafetensorsFile(path: directory.appendingPathComponent("none").path)) {
            XCTAssertTrue("\($0)".contains("cannot read"))
        }
        let ok = try SafetensorsFile(path: { let p = directory.appendingPathComponent("ok").path
            try data.write(to: URL(fileURLWithPath: p)); return p }())
        XCTAssertThrowsError(try ok.tensor("missing")) { XCTAssertTrue("\($0)".contains("no tensor named 'missing'")) }
        XCTAssertThrowsError(try ok.int64s("w")) { XCTAssertTrue("\($0)".contains("expected I64")) }
    }
}
