import Foundation
import OCRData
import OCRTensor
import OCRTestSupport
import XCTest

/// A fresh directory under the system temp dir, removed at the end of the test.
func temporaryDirectory(_ test: XCTestCase) throws -> String {
    let path = NSTemporaryDirectory() + "ocr-data-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    return path
}

/// Asserts that `body` throws a DataError whose description names `file` and contains `problem`.
func assertDataError(_ file: String, _ problem: String, line: UInt = #line, _ body: () throws -> Void) {
    do {
        try body()
        XCTFail("expected an error about \(file): \(problem)", line: line)
    } catch let error as DataError {
        XCTAssertTrue(error.description.contains(file), "error does not name \(file): \(error)", line: line)
        XCTAssertTrue(error.description.contains(problem), "error does not say '\(problem)': \(error)", line: line)
    } catch {
        XCTFail("expected a DataError, got \(error)", line: line)
    }
}

final class CodecTests: XCTestCase {
    let expected = try! Fixtures.file("images/expected.safetensors")

    func fixture(_ name: String) -> String { Fixtures.url("images/\(name)").path }

    func reference(_ name: String) throws -> (shape: [Int], bytes: [UInt8]) {
        let entry = try expected.entry(name)
        return (entry.shape, [UInt8](entry.bytes))
    }

    func testPNGDecodingMatchesPillowPixelForPixel() throws {
        for (name, channels) in [("gray.png", 1), ("palette8.png", 1), ("palette2bit.png", 1), ("rgb.png", 3), ("rgba.png", 4)] {
            let decoded = try ImageCodec.readPNG(fixture(name))
            let want = try reference(name)
            XCTAssertEqual([decoded.image.height, decoded.image.width, decoded.image.channels], want.shape, name)
            XCTAssertEqual(decoded.image.channels, channels, name)
            XCTAssertEqual(decoded.image.pixels, want.bytes, "\(name): pixels differ from Pillow's decode")
            if name.hasPrefix("palette") {
                let palette = try reference(name + ":palette")
                XCTAssertEqual(decoded.palette?.flatMap { $0 }, Array(palette.bytes.prefix(decoded.palette!.count * 3)),
                               "\(name): palette")
            }
        }
        // Labels: palette PNGs give their indices, not colours.
        let label = try ImageCodec.readLabel(fixture("palette8.png"))
        XCTAssertEqual(label.values, try reference("palette8.png").bytes)
        XCTAssertTrue(label.values.contains(255) && label.values.contains(where: { $0 > 0 && $0 < 21 }))
    }

    func testRGBReadingExpandsEveryPNGKind() throws {
        let gray = try ImageCodec.readRGB(fixture("gray.png"))
        XCTAssertEqual(gray.pixels, try reference("gray.png").bytes.flatMap { [$0, $0, $0] })
        let rgba = try ImageCodec.readRGB(fixture("rgba.png"))
        let rgbaBytes = try reference("rgba.png").bytes
        XCTAssertEqual(rgba.pixels, stride(from: 0, to: rgbaBytes.count, by: 4).flatMap { rgbaBytes[$0..<$0 + 3] })
        let palette = try ImageCodec.readRGB(fixture("palette8.png"))
        let colours = try reference("palette8.png:palette").bytes
        XCTAssertEqual(palette.pixels, try reference("palette8.png").bytes.flatMap { colours[Int($0) * 3..<Int($0) * 3 + 3] })
    }

    /// Pillow decodes JPEG with libjpeg-turbo (accurate integer IDCT, fancy upsampling), the settings asked of
    /// TurboJPEG here, so the match is expected to be exact; the test reports the largest difference.
    func testJPEGDecodingMatchesPillow() throws {
        for name in ["rgb420.jpg", "rgb444.jpg", "progressive.jpg", "gray.jpg"] {
            let decoded = try ImageCodec.readRGB(fixture(name))
            let want = try reference(name)
            XCTAssertEqual([decoded.height, decoded.width], Array(want.shape.prefix(2)), name)
            let wantRGB = want.shape[2] == 1 ? want.bytes.flatMap { [$0, $0, $0] } : want.bytes
            let maxDiff = zip(decoded.pixels, wantRGB).map { abs(Int($0) - Int($1)) }.max() ?? 0
            print("\(name): max |TurboJPEG − Pillow| = \(maxDiff)")
            XCTAssertEqual(maxDiff, 0, "\(name): JPEG decode differs from Pillow's")
        }
    }

    func testPNGWritingRoundTrips() throws {
        let dir = try temporaryDirectory(self)
        var rng = SplitMix64(seed: 5)
        let image = PixelImage(width: 31, height: 7, channels: 3, pixels: (0..<31 * 7 * 3).map { _ in UInt8(rng.next() & 255) })
        try ImageCodec.writeRGB(image, to: "\(dir)/rgb.png")
        XCTAssertEqual(try ImageCodec.readRGB("\(dir)/rgb.png"), image)

        let label = LabelImage(width: 9, height: 4, values: (0..<36).map { $0 % 5 == 0 ? 255 : UInt8($0 % 19) })
        try ImageCodec.writeLabel(label, to: "\(dir)/gray.png")
        XCTAssertEqual(try ImageCodec.readLabel("\(dir)/gray.png"), label)
        XCTAssertNil(try ImageCodec.readPNG("\(dir)/gray.png").palette)

        let palette = ClassInfo.cityscapes.fullPalette
        try ImageCodec.writeLabel(label, to: "\(dir)/palette.png", palette: palette)
        let indexed = try ImageCodec.readPNG("\(dir)/palette.png")
        XCTAssertEqual(indexed.palette, palette)
        XCTAssertEqual(try ImageCodec.readLabel("\(dir)/palette.png"), label)
        // The colour view of the indexed PNG shows each class in its colour.
        let colours = try ImageCodec.readRGB("\(dir)/palette.png")
        XCTAssertEqual(Array(colours.pixels[3..<6]), palette[Int(label.values[1])])
    }

    /// Headers claiming 16000², 65535², 60000² or 2³¹×2³¹ pixels (Fuzz/Regressions, files of 69 and 631 bytes) are
    /// errors naming the file, before anything of that size is allocated: ours (the 2²⁸-pixel limit, or more pixels
    /// than the file's bytes can expand to) where the decoder library's own limit does not come first.
    func testImagesClaimingHugeSizesAreRefused() throws {
        func regression(_ name: String) -> URL {
            Fixtures.directory.deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Fuzz/Regressions/\(name.hasPrefix("png") ? "png" : "jpeg")/\(name)")
        }
        let cases = [("png_65535x65535.png", "65535×65535 pixels, more than the 268435456-pixel limit"),
                     ("jpeg_60000x60000.jpg", "60000×60000 pixels, more than the 268435456-pixel limit"),
                     ("png_2147483647x2147483647.png", "corrupt or truncated PNG header"),
                     // Under the pixel limit, but more than the file's compressed data can expand to.
                     ("png_16000x16000.png", "16000×16000 pixels, more than a 69-byte file can hold"),
                     ("jpeg_16000x16000.jpg", "16000×16000 pixels, more than a 631-byte file can hold")]
        for (name, needle) in cases {
            let path = regression(name).path
            do { _ = try ImageCodec.readRGB(path); XCTFail("\(name) was accepted") } catch {
                XCTAssertTrue("\(error)".hasPrefix(path) && "\(error)".contains(needle), "\(error)")
            }
        }
        do { _ = try ImageCodec.readLabel(regression("png_65535x65535.png").path); XCTFail("accepted") } catch {
            XCTAssertTrue("\(error)".contains("pixel limit"), "\(error)")
        }
    }

    func testTruncatedAndCorruptFilesAreErrorsNamingTheFile() throws {
        let dir = try temporaryDirectory(self)
        let png = try Data(contentsOf: Fixtures.url("images/rgb.png"))
        try png.prefix(png.count - 40).write(to: URL(fileURLWithPath: "\(dir)/truncated.png"))
        assertDataError("\(dir)/truncated.png", "truncated") { _ = try ImageCodec.readRGB("\(dir)/truncated.png") }
        assertDataError("\(dir)/truncated.png", "truncated") { _ = try ImageCodec.readLabel("\(dir)/truncated.png") }

        var flipped = [UInt8](png)
        flipped[png.count / 2] ^= 0xFF // inside the image data: the CRC no longer matches
        try Data(flipped).write(to: URL(fileURLWithPath: "\(dir)/corrupt.png"))
        assertDataError("\(dir)/corrupt.png", "corrupt") { _ = try ImageCodec.readRGB("\(dir)/corrupt.png") }

        let jpeg = try Data(contentsOf: Fixtures.url("images/rgb420.jpg"))
        try jpeg.prefix(jpeg.count / 2).write(to: URL(fileURLWithPath: "\(dir)/truncated.jpg"))
        assertDataError("\(dir)/truncated.jpg", "JPEG") { _ = try ImageCodec.readRGB("\(dir)/truncated.jpg") }
        try Data(jpeg.prefix(2) + Data(repeating: 0x17, count: 300)).write(to: URL(fileURLWithPath: "\(dir)/garbage.jpg"))
        assertDataError("\(dir)/garbage.jpg", "corrupt") { _ = try ImageCodec.readRGB("\(dir)/garbage.jpg") }

        try Data("not an image".utf8).write(to: URL(fileURLWithPath: "\(dir)/text.png"))
        assertDataError("\(dir)/text.png", "not a PNG or JPEG") { _ = try ImageCodec.readRGB("\(dir)/text.png") }
        assertDataError("\(dir)/missing.png", "does not exist") { _ = try ImageCodec.readRGB("\(dir)/missing.png") }
        assertDataError(fixture("rgb.png"), "single-channel") { _ = try ImageCodec.readLabel(fixture("rgb.png")) }
    }
}
