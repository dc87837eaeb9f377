import Foundation

/// TensorBoard's event file (`events.out.tfevents.<time>.<host>`), scalars only: TFRecord framing (little-endian
/// length, masked CRC-32C of the length, the record, masked CRC-32C of the record) around `Event` protobufs
/// (tensorflow/core/util/event.proto: wall_time = 1 double, step = 2 int64, file_version = 3 string, summary = 5;
/// Summary.value = 1 repeated, Value.tag = 1 string, Value.simple_value = 2 float). Rank 0 writes it, each record
/// flushed as it is added, so a killed run keeps what it logged.
public final class TensorBoardWriter {
    public let path: String
    private let handle: FileHandle

    /// Creates WORK_DIR/tensorboard/events.out.tfevents.<seconds>.<host> and writes the version event.
    public init(directory: String, wallTime: Date = Date()) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let host = ProcessInfo.processInfo.hostName
        path = "\(directory)/events.out.tfevents.\(Int(wallTime.timeIntervalSince1970)).\(host)"
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let handle = FileHandle(forWritingAtPath: path) else {
            throw LogError("\(path): cannot create the TensorBoard event file")
        }
        self.handle = handle
        var event = Protobuf()
        event.double(1, wallTime.timeIntervalSince1970)
        event.lengthDelimited(3, Array("brain.Event:2".utf8))
        try write(event.encoded)
    }

    deinit { try? handle.close() }

    /// One event at `step` holding `scalars` (tag, value), e.g. ("train/loss", 0.53).
    public func add(step: Int, scalars: [(String, Double)], wallTime: Date = Date()) throws {
        var summary = Protobuf()
        for (tag, value) in scalars {
            var entry = Protobuf()
            entry.lengthDelimited(1, Array(tag.utf8))
            entry.float(2, Float(value))
            summary.lengthDelimited(1, entry.encoded)
        }
        var event = Protobuf()
        event.double(1, wallTime.timeIntervalSince1970)
        event.varint(2, UInt64(bitPattern: Int64(step)))
        event.lengthDelimited(5, summary.encoded)
        try write(event.encoded)
    }

    private func write(_ record: [UInt8]) throws {
        try handle.write(contentsOf: Self.frame(record))
        try handle.synchronize()
    }

    /// TFRecord framing of one record.
    public static func frame(_ record: [UInt8]) -> Data {
        var length = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { length[i] = UInt8(truncatingIfNeeded: UInt64(record.count) >> (8 * i)) }
        var out = Data(length)
        out.append(contentsOf: littleEndian(maskedCRC32C(length)))
        out.append(contentsOf: record)
        out.append(contentsOf: littleEndian(maskedCRC32C(record)))
        return out
    }

    public static func littleEndian(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }

    /// TFRecord's mask over CRC-32C: rotate right by 15, add a constant.
    public static func maskedCRC32C(_ bytes: [UInt8]) -> UInt32 {
        let crc = crc32c(bytes)
        return ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }

    /// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: event records are small.
    public static func crc32c(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return ~crc
    }
}

/// The few protobuf wire encodings an Event needs.
struct Protobuf {
    private(set) var encoded: [UInt8] = []

    private mutating func key(_ field: Int, _ wireType: UInt64) { appendVarint(UInt64(field) << 3 | wireType) }

    private mutating func appendVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            encoded.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        encoded.append(UInt8(v))
    }

    mutating func varint(_ field: Int, _ value: UInt64) {
        key(field, 0)
        appendVarint(value)
    }

    mutating func double(_ field: Int, _ value: Double) {
        key(field, 1)
        encoded += (0..<8).map { UInt8(truncatingIfNeeded: value.bitPattern >> (8 * $0)) }
    }

    mutating func float(_ field: Int, _ value: Float) {
        key(field, 5)
        encoded += (0..<4).map { UInt8(truncatingIfNeeded: value.bitPattern >> (8 * $0)) }
    }

    mutating func lengthDelimited(_ field: Int, _ value: [UInt8]) {
        key(field, 2)
        appendVarint(UInt64(value.count))
        encoded += value
    }
}
