/// An activation kept for the backward pass as bf16 bits, once the forward has no reader of its fp32 values left.
/// x: any shape → the same values rounded as `BF16.round` rounds them, in half the bytes (a pooled block of
/// ⌈count/2⌉ floats, back to the pool when the last holder lets go).
///
/// In bf16 training what the backward still reads of a ReLU's output that only feeds convolutions is the weight
/// gradients' column operand, which their GEMMs round to bf16 themselves (rounding twice is rounding once, so those
/// bits do not change; Winograd's transform of the rounded values rounds differently), and the ReLU's mask y > 0,
/// which rounding keeps, bar values below bf16's smallest subnormal (2⁻¹³³) that turn to 0.
public final class BF16Activation {
    public let shape: [Int]
    public let count: Int
    private let storage: Tensor

    public init(rounding x: Tensor) {
        let timing = Profiler.begin(); defer { Profiler.end("bf16 activation kept", timing) }
        shape = x.shape
        count = x.count
        storage = Tensor.transient(shape: [(x.count + 1) / 2])
        let (values, bits) = (x.data, self.bits)
        parallelChunks(count, minimumPerChunk: 1 << 16) { s, e in
            BF16.pack(UnsafeBufferPointer(start: values + s, count: e - s),
                      into: UnsafeMutableBufferPointer(start: bits + s, count: e - s))
        }
    }

    public var bits: UnsafeMutablePointer<UInt16> {
        UnsafeMutableRawPointer(storage.data).assumingMemoryBound(to: UInt16.self)
    }

    /// The rounded values as fp32, in a new transient tensor, for readers that take fp32.
    public func expanded() -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("bf16 activation expanded", timing) }
        let x = Tensor.transient(shape: shape)
        let (values, bits) = (x.data, self.bits)
        parallelChunks(count, minimumPerChunk: 1 << 16) { s, e in
            BF16.unpack(UnsafeBufferPointer(start: bits + s, count: e - s),
                        into: UnsafeMutableBufferPointer(start: values + s, count: e - s))
        }
        return x
    }
}

/// A kept activation read by the backward kernels as fp32 lanes: fp32 values, or bf16 bits widened as they load
/// (no expanded copy, half the bytes read). `offset(by:)` moves to a plane.
public struct ActivationPlane {
    private let floats: UnsafePointer<Float>?
    /// The bits, read with raw loads: their storage is a pooled float block.
    private let bits: UnsafeRawPointer?

    public init(_ x: Tensor) { (floats, bits) = (UnsafePointer(x.data), nil) }
    public init(_ x: BF16Activation) { (floats, bits) = (nil, UnsafeRawPointer(x.bits)) }

    @inline(__always)
    public func offset(by n: Int) -> ActivationPlane {
        ActivationPlane(floats: floats.map { $0 + n }, bits: bits.map { $0 + 2 * n })
    }

    private init(floats: UnsafePointer<Float>?, bits: UnsafeRawPointer?) { (self.floats, self.bits) = (floats, bits) }

    /// Elements j ..< j + 16.
    @inline(__always)
    public func lanes(_ j: Int) -> PlaneSums.Lanes {
        if let floats { return PlaneSums.load(floats + j) }
        let raw = bits!.loadUnaligned(fromByteOffset: 2 * j, as: SIMD16<UInt16>.self)
        return unsafeBitCast(SIMD16<UInt32>(truncatingIfNeeded: raw) &<< 16, to: PlaneSums.Lanes.self)
    }

    @inline(__always)
    public subscript(j: Int) -> Float {
        if let floats { return floats[j] }
        return Float(bitPattern: UInt32(bits!.loadUnaligned(fromByteOffset: 2 * j, as: UInt16.self)) << 16)
    }
}
