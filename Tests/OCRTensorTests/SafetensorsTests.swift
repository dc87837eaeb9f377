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

    /// Files that lie about their sizes get an error naming the problem, never a crash or an allocation of what
    /// they claim.
    func testLyingHeadersAreErrors() {
        func file(headerLength: UInt64, _ header: String, body: Int = 0) -> Data {
            var length = headerLength.littleEndian
            var data = Data(bytes: &length, count: 8)
            data.append(Data(header.utf8))
            data.append(Data(count: body))
            return data
        }
        func error(_ data: Data) -> String {
            do { _ = try SafetensorsFile(path: "x.safetensors", contents: data); return "no error" } catch { return "\(error)" }
        }
        let entry = #"{"t":{"dtype":"F32","shape":SHAPE,"data_offsets":OFFSETS}}"#
        func header(_ shape: String, _ offsets: String) -> String {
            entry.replacingOccurrences(of: "SHAPE", with: shape).replacingOccurrences(of: "OFFSETS", with: offsets)
        }
        let cases: [(Data, String)] = [
            (file(headerLength: UInt64(Int64.max), "{}"), "truncated: header of 9223372036854775807 bytes"),
            (file(headerLength: UInt64.max, "{}"), "truncated: header of 18446744073709551615 bytes"),
            (file(headerLength: 0, ""), "truncated"),
            (Data([1, 2, 3]), "no header length"),
            (file(headerLength: 200_000, String(repeating: "[", count: 200_000)), "nests deeper than 16"),
            (file(headerLength: 2, "[]"), "not a JSON object"),
            // 2^62 × 4 bytes overflows; negative dimensions; offsets past the data; reversed offsets.
            ({ let h = header("[4611686018427387904, 4]", "[0, 16]"); return file(headerLength: UInt64(h.utf8.count), h, body: 16) }(),
             "does not fit shape"),
            ({ let h = header("[-4]", "[0, 16]"); return file(headerLength: UInt64(h.utf8.count), h, body: 16) }(), "does not fit shape"),
            ({ let h = header("[4]", "[0, 16]"); return file(headerLength: UInt64(h.utf8.count), h, body: 8) }(), "does not fit shape"),
            ({ let h = header("[0]", "[16, 0]"); return file(headerLength: UInt64(h.utf8.count), h, body: 16) }(), "does not fit shape"),
            ({ let h = #"{"__metadata__":{"a":1}}"#; return file(headerLength: UInt64(h.utf8.count), h) }(), "__metadata__"),
        ]
        for (data, needle) in cases {
            let message = error(data)
            XCTAssertTrue(message.hasPrefix("x.safetensors: ") && message.contains(needle), "\(needle): \(message)")
        }
    }
}
