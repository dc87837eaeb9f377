import FuzzSupport
import OCRTrain

/// Any text as a YAML config, read into an ExperimentConfig as `ocr-ddp train CONFIG` reads it (keys, values and
/// the pipelines, checked; nothing built from it).
func fuzzConfig(_ bytes: [UInt8]) {
    guard let tree = try? ConfigValue(yaml: String(decoding: bytes, as: UTF8.self), source: "fuzz.yaml") else { return }
    _ = try? ExperimentConfig(tree: tree)
}

@main enum Main { static func main() { fuzzOrReplay(fuzzConfig) } }
