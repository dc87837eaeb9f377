import Foundation
import FuzzSupport
import OCRFiles

/// Any bytes as a safetensors file, and every tensor it declares read back: must throw or succeed, never crash,
/// never allocate what a lying header claims.
func fuzzSafetensors(_ bytes: [UInt8]) {
    guard let file = try? SafetensorsFile(path: "fuzz.safetensors", contents: Data(bytes)) else { return }
    for name in file.names {
        _ = try? file.floats(name)
        _ = try? file.int64s(name)
    }
}

@main enum Main { static func main() { fuzzOrReplay(fuzzSafetensors) } }
