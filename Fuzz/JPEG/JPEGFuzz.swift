import FuzzSupport
import OCRData

/// Any bytes as a JPEG image (decoded to RGB).
func fuzzJPEG(_ bytes: [UInt8]) {
    _ = try? ImageCodec.decodeRGB(bytes, path: "fuzz.jpg")
}

@main enum Main { static func main() { fuzzOrReplay(fuzzJPEG) } }
