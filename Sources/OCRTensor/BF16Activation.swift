/// An activation kept for the backward pass as bf16 bits, once the forward has no reader of its fp32 values left.
/// x: any shape → the same values rounded as `BF16.round` rounds them, in half the bytes (a pooled block of
/// ⌈count/2⌉ floats, back to the pool when the last holder lets go).
///
/// In bf16 training what the backward still reads of a ReLU's output that only feeds convolutions is the weight
/// gradients' column operand, which their GEMMs round to bf16 themselves (rounding twice is rounding once, so those
/// bits do not change), and the ReLU's mask y > 0, which rounding keeps, bar values below bf16's smallest
/// subnormal (2⁻¹³³) that turn to 0.
public final class BF16Activation {
    public let shape: [Int]
    public let count: Int
    private let storage: Tensor

    public init(rounding x: Tensor) {
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
        let x = Tensor.transient(shape: shape)
        let (values, bits) = (x.data, self.bits)
        parallelChunks(count, minimumPerChunk: 1 << 16) { s, e in
            BF16.unpack(UnsafeBufferPointer(start: bits + s, count: e - s),
                        into: UnsafeMutableBufferPointer(start: values + s, count: e - s))
        }
        return x
    }
}
