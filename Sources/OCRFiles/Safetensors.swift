import Foundation

/// The safetensors format (as Hugging Face defines it): an 8-byte little-endian header length, a JSON header
/// `{name: {"dtype", "shape", "data_offsets": [begin, end)}, "__metadata__": {str: str}}` padded with spaces to a
/// multiple of 8 bytes, then the raw little-endian tensor data. Checkpoints and test fixtures use it. This module
/// parses files from anywhere, so it is built with every check on (Package.swift); OCRTensor adds the Tensor views.
public enum SafetensorsDType: String, Sendable {
    case f32 = "F32", f64 = "F64", i64 = "I64", i32 = "I32", u8 = "U8"

    var byteSize: Int {
        switch self {
        case .f64, .i64: 8
        case .f32, .i32: 4
        case .u8: 1
        }
    }
}

public struct SafetensorsError: Error, CustomStringConvertible {
    public let description: String
    init(_ path: String, _ problem: String) { description = "\(path): \(problem)" }
}

public struct SafetensorsEntry {
    public let dtype: SafetensorsDType
    public let shape: [Int]
    public let bytes: Data
    public var elementCount: Int { shape.reduce(1, *) }
}

public struct SafetensorsFile {
    public let path: String
    public private(set) var metadata: [String: String] = [:]
    /// Tensor names in file order (the order of their data).
    public private(set) var names: [String] = []
    public private(set) var entries: [String: SafetensorsEntry] = [:]

    /// Headers beyond this are refused: a checkpoint of a few thousand tensors needs well under a megabyte.
    public static let maximumHeaderBytes = 100 << 20

    /// A safetensors header is two levels deep (three with a shape list); the JSON parser recurses per level.
    static let maximumNesting = 16

    /// The deepest bracket nesting of JSON text, strings skipped.
    static func nestingDepth(of json: Data) -> Int {
        var (depth, deepest, inString, escaped) = (0, 0, false, false)
        for byte in json {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true }
                else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1; deepest = max(deepest, depth)
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            default: break
            }
        }
        return deepest
    }

    public init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SafetensorsError(path, "cannot read file")
        }
        try self.init(path: path, contents: data)
    }

    /// Parses a file's bytes. Every size the header claims is checked against the bytes present before anything is
    /// allocated, so a file that lies gets an error naming it, never an allocation of its claimed size.
    public init(path: String, contents data: Data) throws {
        self.path = path
        guard data.count >= 8 else { throw SafetensorsError(path, "truncated: no header length") }
        let claimed = data.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard claimed > 0, claimed <= UInt64(data.count - 8) else {
            throw SafetensorsError(path, "truncated: header of \(claimed) bytes in a \(data.count)-byte file")
        }
        let headerLength = Int(claimed)
        guard headerLength <= Self.maximumHeaderBytes else {
            throw SafetensorsError(path, "header of \(headerLength) bytes exceeds the \(Self.maximumHeaderBytes)-byte limit")
        }
        let header = data.subdata(in: 8..<(8 + headerLength))
        guard Self.nestingDepth(of: header) <= Self.maximumNesting else {
            throw SafetensorsError(path, "header nests deeper than \(Self.maximumNesting) levels")
        }
        guard let json = try? JSONSerialization.jsonObject(with: header) as? [String: Any] else {
            throw SafetensorsError(path, "header is not a JSON object")
        }
        let body = data.subdata(in: (8 + headerLength)..<data.count)
        var located: [(String, Int)] = []
        for (name, value) in json {
            if name == "__metadata__" {
                guard let strings = value as? [String: String] else {
                    throw SafetensorsError(path, "__metadata__ is not a map of strings")
                }
                metadata = strings
                continue
            }
            guard let info = value as? [String: Any],
                  let dtypeName = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int],
                  let offsets = info["data_offsets"] as? [Int], offsets.count == 2
            else { throw SafetensorsError(path, "malformed header entry '\(name)'") }
            guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
                throw SafetensorsError(path, "tensor '\(name)' has unsupported dtype \(dtypeName)")
            }
            // The byte count of the shape, without overflow, must be the span of its offsets inside the data.
            var expected: Int? = dtype.byteSize
            for dimension in shape {
                guard dimension >= 0, let product = expected?.multipliedReportingOverflow(by: dimension),
                      !product.overflow else { expected = nil; break }
                expected = product.partialValue
            }
            guard let expected, offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= body.count,
                  offsets[1] - offsets[0] == expected else {
                throw SafetensorsError(path, "tensor '\(name)' data \(offsets) does not fit shape \(shape) "
                                           + "(\(dtype.rawValue)) in a \(body.count)-byte data section")
            }
            entries[name] = SafetensorsEntry(dtype: dtype, shape: shape, bytes: body.subdata(in: offsets[0]..<offsets[1]))
            located.append((name, offsets[0]))
        }
        names = located.sorted { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }.map(\.0)
    }

    public func entry(_ name: String) throws -> SafetensorsEntry {
        guard let e = entries[name] else { throw SafetensorsError(path, "no tensor named '\(name)'") }
        return e
    }

    /// The values of a float tensor (F32 as stored, F64 rounded to float32), in row-major order.
    public func floats(_ name: String) throws -> [Float] {
        let e = try entry(name)
        return try e.bytes.withUnsafeBytes { raw in
            switch e.dtype {
            case .f32:
                return (0..<e.elementCount).map {
                    Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))
                }
            case .f64:
                return (0..<e.elementCount).map {
                    Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))))
                }
            default:
                throw SafetensorsError(path, "tensor '\(name)' is \(e.dtype.rawValue), expected a float dtype")
            }
        }
    }

    public func int64s(_ name: String) throws -> [Int64] {
        let e = try entry(name)
        guard e.dtype == .i64 else {
            throw SafetensorsError(path, "tensor '\(name)' is \(e.dtype.rawValue), expected I64")
        }
        return e.bytes.withUnsafeBytes { raw in
            (0..<e.elementCount).map { Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
        }
    }
}

/// Collects tensors in order and writes them as one safetensors file, atomically (temporary file, fsync, rename),
/// so a crash mid-write never leaves a half-written file under the final name.
public struct SafetensorsWriter {
    private var items: [(name: String, dtype: SafetensorsDType, shape: [Int], bytes: Data)] = []
    public var metadata: [String: String] = [:]

    public init() {}

    /// float32 values in row-major order (little-endian hosts only: x86_64, arm64).
    public mutating func add(_ name: String, float32 bytes: Data, shape: [Int]) {
        items.append((name, .f32, shape, bytes))
    }

    public mutating func add(_ name: String, int64s values: [Int64], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *))
        let bytes = values.withUnsafeBufferPointer { Data(buffer: $0) }
        items.append((name, .i64, shape, bytes))
    }

    /// The file's bytes; the header lists tensors in insertion order so equal contents give identical files.
    public func serialized() -> Data {
        var header = "{"
        if !metadata.isEmpty {
            let fields = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            header += "\"__metadata__\":{\(fields.joined(separator: ","))},"
        }
        var offset = 0
        var fields: [String] = []
        for item in items {
            let end = offset + item.bytes.count
            let shape = item.shape.map(String.init).joined(separator: ",")
            fields.append("\(jsonString(item.name)):{\"dtype\":\"\(item.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        header += fields.joined(separator: ",") + "}"
        var headerBytes = Data(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
        var out = Data()
        var length = UInt64(headerBytes.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(headerBytes)
        for item in items { out.append(item.bytes) }
        return out
    }

    public func write(to path: String) throws {
        try writeFileAtomically(serialized(), to: path)
    }
}

private func jsonString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case "\r": out += "\\r"
        default:
            if scalar.value < 0x20 { out += String(format: "\\u%04x", scalar.value) } else { out.unicodeScalars.append(scalar) }
        }
    }
    return out + "\""
}

/// Writes `data` to `path.tmp-PID`, fsyncs it, renames it over `path` and fsyncs the directory.
public func writeFileAtomically(_ data: Data, to path: String) throws {
    let temporary = "\(path).tmp-\(getpid())"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw SafetensorsError(path, "cannot create (\(String(cString: strerror(errno))))") }
    var ok = true
    data.withUnsafeBytes { raw in
        var written = 0
        while written < raw.count {
            let n = Foundation.write(fd, raw.baseAddress! + written, raw.count - written)
            if n <= 0 { ok = false; break }
            written += n
        }
    }
    if fsync(fd) != 0 { ok = false }
    close(fd)
    guard ok, rename(temporary, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(temporary)
        throw SafetensorsError(path, "write failed (\(reason))")
    }
    let directory = (path as NSString).deletingLastPathComponent
    let dfd = open(directory.isEmpty ? "." : directory, O_RDONLY)
    if dfd >= 0 { fsync(dfd); close(dfd) }
}
