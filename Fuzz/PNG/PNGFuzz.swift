import FuzzSupport
import OCRData

/// Any bytes as a PNG: decoded as RGB, as a label map, and in its own layout, then the label checked against
/// Cityscapes' label-id encoding as a dataset would.
func fuzzPNG(_ bytes: [UInt8]) {
    _ = try? ImageCodec.decodeRGB(bytes, path: "fuzz.png")
    if let label = try? ImageCodec.decodeLabel(bytes, path: "fuzz.png") {
        _ = try? LabelEncoding.cityscapesLabelIds.trainIds(label, classCount: 19, path: "fuzz.png")
    }
}

@main enum Main { static func main() { fuzzOrReplay(fuzzPNG) } }
