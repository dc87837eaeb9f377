import CSPNG
import CTurboJPEG
import Foundation

/// PNG (libspng) and JPEG (TurboJPEG) reading and writing. Both libraries report failures as return codes, so a
/// truncated or corrupt file becomes a `DataError` naming the file, never a crash. The format is recognised by its
/// signature, not by the file name.
public enum ImageCodec {
    /// What a PNG holds, decoded without conversion: `image` has 1 channel for gray and palette (indices, not
    /// colours), 2 for gray+alpha, 3 for RGB, 4 for RGBA; `palette` is the PLTE colours of an indexed PNG.
    public struct DecodedPNG {
        public var image: PixelImage
        public var palette: [[UInt8]]?
    }

    // MARK: Reading

    /// Any PNG or JPEG as 3-channel RGB (gray replicated, alpha dropped, palette expanded, 16-bit scaled to 8).
    public static func readRGB(_ path: String) throws -> PixelImage { try decodeRGB(try readFile(path), path: path) }

    /// A label map: an 8-bit (or lower depth) gray PNG, or a palette PNG whose indices are the labels (VOC).
    public static func readLabel(_ path: String) throws -> LabelImage { try decodeLabel(try readFile(path), path: path) }

    /// A PNG in its own layout (see `DecodedPNG`); 16-bit PNGs are refused since nothing here stores them.
    public static func readPNG(_ path: String) throws -> DecodedPNG {
        let bytes = try readFile(path)
        guard isPNG(bytes) else { throw DataError(path, "not a PNG file") }
        return try decodePNG(bytes, path: path)
    }

    /// `readRGB` on bytes in memory (`path` names them in errors).
    public static func decodeRGB(_ bytes: [UInt8], path: String) throws -> PixelImage {
        if isPNG(bytes) { return try decodePNGAsRGB(bytes, path: path) }
        if isJPEG(bytes) { return try decodeJPEG(bytes, path: path) }
        throw DataError(path, "not a PNG or JPEG image (unrecognised signature)")
    }

    /// `readLabel` on bytes in memory.
    public static func decodeLabel(_ bytes: [UInt8], path: String) throws -> LabelImage {
        guard isPNG(bytes) else { throw DataError(path, "label is not a PNG file") }
        let decoded = try decodePNG(bytes, path: path)
        guard decoded.image.channels == 1 else {
            throw DataError(path, "label must be a single-channel (gray or palette) PNG, found \(decoded.image.channels) channels")
        }
        return LabelImage(width: decoded.image.width, height: decoded.image.height, values: decoded.image.pixels)
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw DataError(path, "file does not exist")
        }
        guard !isDirectory.boolValue else { throw DataError(path, "is a directory, expected an image file") }
        guard let data = FileManager.default.contents(atPath: path) else { throw DataError(path, "cannot read file") }
        guard !data.isEmpty else { throw DataError(path, "file is empty") }
        return [UInt8](data)
    }

    static func isPNG(_ bytes: [UInt8]) -> Bool {
        bytes.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
    }

    static func isJPEG(_ bytes: [UInt8]) -> Bool { bytes.starts(with: [0xFF, 0xD8]) }

    // MARK: PNG decoding

    /// Runs `body` on a decoder context reading `bytes` and its header; frees the context on every path.
    private static func withPNGDecoder<T>(
        _ bytes: [UInt8], path: String, _ body: (OpaquePointer, spng_ihdr) throws -> T
    ) throws -> T {
        guard let context = spng_ctx_new(0) else { throw DataError(path, "cannot create a PNG decoder") }
        defer { spng_ctx_free(context) }
        return try bytes.withUnsafeBytes { buffer in
            try check(spng_set_png_buffer(context, buffer.baseAddress, buffer.count), path, "PNG")
            var header = spng_ihdr()
            try check(spng_get_ihdr(context, &header), path, "PNG header")
            try checkSize(width: Int(header.width), height: Int(header.height), path: path, format: "PNG",
                          fileBytes: bytes.count, expansion: deflateExpansion)
            return try body(context, header)
        }
    }

    private static func decodePNGAsRGB(_ bytes: [UInt8], path: String) throws -> PixelImage {
        try withPNGDecoder(bytes, path: path) { context, header in
            let format = Int32(SPNG_FMT_RGB8.rawValue)
            var length = 0
            try check(spng_decoded_image_size(context, format, &length), path, "PNG")
            var pixels = [UInt8](repeating: 0, count: length)
            try pixels.withUnsafeMutableBytes { out in
                try check(spng_decode_image(context, out.baseAddress, length, format, 0), path, "PNG image data")
            }
            return PixelImage(width: Int(header.width), height: Int(header.height), channels: 3, pixels: pixels)
        }
    }

    static func decodePNG(_ bytes: [UInt8], path: String) throws -> DecodedPNG {
        try withPNGDecoder(bytes, path: path) { context, header in
            let width = Int(header.width), height = Int(header.height), depth = Int(header.bit_depth)
            let channels: Int
            switch Int(header.color_type) {
            case Int(SPNG_COLOR_TYPE_GRAYSCALE.rawValue), Int(SPNG_COLOR_TYPE_INDEXED.rawValue): channels = 1
            case Int(SPNG_COLOR_TYPE_GRAYSCALE_ALPHA.rawValue): channels = 2
            case Int(SPNG_COLOR_TYPE_TRUECOLOR.rawValue): channels = 3
            default: channels = 4
            }
            guard depth <= 8 else { throw DataError(path, "\(depth)-bit PNG is not supported here (8-bit expected)") }
            // SPNG_FMT_PNG: the file's own sample layout, rows packed at `depth` bits per sample.
            let format = Int32(SPNG_FMT_PNG.rawValue)
            var length = 0
            try check(spng_decoded_image_size(context, format, &length), path, "PNG")
            var packed = [UInt8](repeating: 0, count: length)
            try packed.withUnsafeMutableBytes { out in
                try check(spng_decode_image(context, out.baseAddress, length, format, 0), path, "PNG image data")
            }
            let pixels = depth == 8 ? packed : unpackSubByteRows(packed, width: width, height: height, depth: depth)
            var palette: [[UInt8]]?
            if header.color_type == UInt8(SPNG_COLOR_TYPE_INDEXED.rawValue) {
                var plte = spng_plte()
                try check(spng_get_plte(context, &plte), path, "PNG palette")
                palette = withUnsafeBytes(of: &plte.entries) { raw in
                    let entries = raw.bindMemory(to: spng_plte_entry.self)
                    return (0..<Int(plte.n_entries)).map { [entries[$0].red, entries[$0].green, entries[$0].blue] }
                }
            }
            return DecodedPNG(image: PixelImage(width: width, height: height, channels: channels, pixels: pixels),
                              palette: palette)
        }
    }

    /// 1/2/4-bit gray or palette rows (each row padded to a whole byte, most significant bits first) → one byte
    /// per pixel holding the sample value (not rescaled: these are indices or label values).
    private static func unpackSubByteRows(_ packed: [UInt8], width: Int, height: Int, depth: Int) -> [UInt8] {
        let rowBytes = (width * depth + 7) / 8
        let perByte = 8 / depth, mask = UInt8((1 << depth) - 1)
        var out = [UInt8](repeating: 0, count: width * height)
        for y in 0..<height {
            for x in 0..<width {
                let byte = packed[y * rowBytes + x / perByte]
                let shift = 8 - depth * (x % perByte + 1)
                out[y * width + x] = (byte >> UInt8(shift)) & mask
            }
        }
        return out
    }

    /// Images beyond this many pixels are refused before anything is allocated (16384 × 16384; a Cityscapes
    /// frame has 2 million): a header claiming 2³¹ × 2³¹ must give an error, not a 4.6e18-byte allocation.
    public static let maximumPixels = 1 << 28
    /// No file holds more pixels than its compression can expand to: deflate stops at 1032:1 (PNG), and a JPEG
    /// spends at least a few bits on each 8×8 block (4096:1 is far beyond any real one). A header claiming more
    /// than that is lying about its size, and is refused before the pixels are allocated.
    static let deflateExpansion = 1040, jpegExpansion = 4096

    static func checkSize(width: Int, height: Int, path: String, format: String, fileBytes: Int, expansion: Int) throws {
        guard width <= maximumPixels, height <= maximumPixels, width * height <= maximumPixels else {
            throw DataError(path, "\(format) header claims \(width)×\(height) pixels, more than the "
                                + "\(maximumPixels)-pixel limit")
        }
        guard width * height <= expansion * fileBytes + (1 << 16) else {
            throw DataError(path, "\(format) header claims \(width)×\(height) pixels, more than a \(fileBytes)-byte "
                                + "file can hold")
        }
    }

    private static func check(_ code: Int32, _ path: String, _ what: String) throws {
        guard code != 0 else { return }
        let message = spng_strerror(code).map { String(cString: $0) } ?? "error \(code)"
        throw DataError(path, "corrupt or truncated \(what): \(message)")
    }

    // MARK: JPEG decoding

    /// Baseline or progressive JPEG → RGB, with libjpeg-turbo's accurate integer IDCT and fancy upsampling (the
    /// defaults of Pillow and OpenCV). A warning such as "premature end of data" is an error: a truncated image
    /// would otherwise train as a half-gray picture.
    static func decodeJPEG(_ bytes: [UInt8], path: String) throws -> PixelImage {
        guard let decoder = tjInitDecompress() else { throw DataError(path, "cannot create a JPEG decoder") }
        defer { tjDestroy(decoder) }
        func failure(_ stage: String) -> DataError {
            let message = tjGetErrorStr2(decoder).map { String(cString: $0) } ?? "unknown error"
            return DataError(path, "corrupt, truncated or unsupported JPEG (\(stage)): \(message)")
        }
        return try bytes.withUnsafeBufferPointer { jpeg in
            var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
            guard tjDecompressHeader3(decoder, jpeg.baseAddress, UInt(jpeg.count),
                                      &width, &height, &subsampling, &colorspace) == 0 else { throw failure("header") }
            guard width > 0, height > 0 else {
                throw DataError(path, "corrupt JPEG: header gives a \(width)×\(height) image")
            }
            try checkSize(width: Int(width), height: Int(height), path: path, format: "JPEG",
                          fileBytes: bytes.count, expansion: jpegExpansion)
            var pixels = [UInt8](repeating: 0, count: Int(width) * Int(height) * 3)
            let status = pixels.withUnsafeMutableBufferPointer { out in
                tjDecompress2(decoder, jpeg.baseAddress, UInt(jpeg.count), out.baseAddress, width, 0, height,
                              Int32(TJPF_RGB.rawValue), TJFLAG_ACCURATEDCT)
            }
            guard status == 0 else { throw failure("image data") }
            return PixelImage(width: Int(width), height: Int(height), channels: 3, pixels: pixels)
        }
    }

    // MARK: PNG writing

    /// An 8-bit RGB PNG (H×W×3).
    public static func writeRGB(_ image: PixelImage, to path: String, compressionLevel: Int = 6) throws {
        precondition(image.channels == 3, "writeRGB takes 3 channels, got \(image.channels)")
        try writePNG(pixels: image.pixels, width: image.width, height: image.height,
                     colorType: SPNG_COLOR_TYPE_TRUECOLOR, palette: nil, path: path, compressionLevel: compressionLevel)
    }

    /// A label map as an 8-bit gray PNG, or, given a palette (≤ 256 RGB colours), as an indexed PNG whose indices
    /// are the labels and whose colours show them (mmseg's colour predictions).
    public static func writeLabel(_ label: LabelImage, to path: String, palette: [[UInt8]]? = nil,
                                  compressionLevel: Int = 6) throws {
        try writePNG(pixels: label.values, width: label.width, height: label.height,
                     colorType: palette == nil ? SPNG_COLOR_TYPE_GRAYSCALE : SPNG_COLOR_TYPE_INDEXED,
                     palette: palette, path: path, compressionLevel: compressionLevel)
    }

    private static func writePNG(pixels: [UInt8], width: Int, height: Int, colorType: spng_color_type,
                                 palette: [[UInt8]]?, path: String, compressionLevel: Int) throws {
        guard let context = spng_ctx_new(Int32(SPNG_CTX_ENCODER.rawValue)) else {
            throw DataError(path, "cannot create a PNG encoder")
        }
        defer { spng_ctx_free(context) }
        func encoderCheck(_ code: Int32) throws {
            guard code != 0 else { return }
            let message = spng_strerror(code).map { String(cString: $0) } ?? "error \(code)"
            throw DataError(path, "cannot encode PNG: \(message)")
        }
        try encoderCheck(spng_set_option(context, SPNG_ENCODE_TO_BUFFER, 1))
        try encoderCheck(spng_set_option(context, SPNG_IMG_COMPRESSION_LEVEL, Int32(compressionLevel)))
        var header = spng_ihdr(width: UInt32(width), height: UInt32(height), bit_depth: 8,
                               color_type: UInt8(colorType.rawValue), compression_method: 0, filter_method: 0,
                               interlace_method: 0)
        try encoderCheck(spng_set_ihdr(context, &header))
        if let palette {
            precondition(palette.count <= 256 && palette.allSatisfy { $0.count == 3 }, "palette must be ≤ 256 RGB colours")
            var plte = spng_plte()
            plte.n_entries = UInt32(palette.count)
            withUnsafeMutableBytes(of: &plte.entries) { raw in
                let entries = raw.bindMemory(to: spng_plte_entry.self)
                for (i, colour) in palette.enumerated() {
                    entries[i] = spng_plte_entry(red: colour[0], green: colour[1], blue: colour[2], alpha: 255)
                }
            }
            try encoderCheck(spng_set_plte(context, &plte))
        }
        try pixels.withUnsafeBytes { raw in
            try encoderCheck(spng_encode_image(context, raw.baseAddress, raw.count, Int32(SPNG_FMT_PNG.rawValue),
                                               Int32(SPNG_ENCODE_FINALIZE.rawValue)))
        }
        var length = 0
        var error: Int32 = 0
        guard let encoded = spng_get_png_buffer(context, &length, &error) else { try encoderCheck(error); return }
        defer { free(encoded) }
        do {
            try Data(bytes: encoded, count: length).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw DataError(path, "cannot write file: \(error.localizedDescription)")
        }
    }
}
