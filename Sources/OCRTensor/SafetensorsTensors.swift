@_exported import OCRFiles
import Foundation

/// Safetensors entries as Tensors (the file format itself is OCRFiles').
extension SafetensorsFile {
    /// A float tensor (F32 as stored, F64 rounded to float32).
    public func tensor(_ name: String) throws -> Tensor {
        let e = try entry(name)
        return Tensor(shape: e.shape, values: try floats(name))
    }
}

extension SafetensorsWriter {
    public mutating func add(_ name: String, _ tensor: Tensor) {
        add(name, float32: Data(bytes: tensor.data, count: tensor.count * 4), shape: tensor.shape)
    }
}
