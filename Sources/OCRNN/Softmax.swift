import Foundation
import OCRTensor

/// Softmax over one axis of a tensor viewed as outer×axis×inner. y = exp(x − max) / Σ exp(x − max);
/// backward dx = y·(dy − Σ_axis dy·y).
public final class Softmax {
    public let axis: Int
    private var output: Tensor?

    public init(axis: Int) { self.axis = axis }

    static func split(_ shape: [Int], _ axis: Int) -> (outer: Int, size: Int, inner: Int) {
        (shape[..<axis].reduce(1, *), shape[axis], shape[(axis + 1)...].reduce(1, *))
    }

    public func forward(_ x: Tensor) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("Softmax.forward", timing) }
        let y = Tensor.reuse(&output, shape: x.shape)
        let (outer, size, inner) = Softmax.split(x.shape, axis)
        parallelChunks(outer, minimumPerChunk: Swift.max(1, 8192 / Swift.max(size * inner, 1))) { o0, o1 in
            for o in o0..<o1 {
                for i in 0..<inner {
                    let src = x.data + o * size * inner + i, dst = y.data + o * size * inner + i
                    var m = -Float.infinity
                    for a in 0..<size { m = Swift.max(m, src[a * inner]) }
                    var s: Float = 0
                    for a in 0..<size { let e = expf(src[a * inner] - m); dst[a * inner] = e; s += e }
                    let r = 1 / s
                    for a in 0..<size { dst[a * inner] *= r }
                }
            }
        }
        return y
    }

    public func backward(_ dy: Tensor) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("Softmax.backward", timing) }
        guard let y = output else { preconditionFailure("softmax backward before forward") }
        let dx = Tensor.transient(shape: y.shape)
        let (outer, size, inner) = Softmax.split(y.shape, axis)
        parallelChunks(outer, minimumPerChunk: Swift.max(1, 8192 / Swift.max(size * inner, 1))) { o0, o1 in
            for o in o0..<o1 {
                for i in 0..<inner {
                    let base = o * size * inner + i
                    let (ys, gs, ds) = (y.data + base, dy.data + base, dx.data + base)
                    var dot: Float = 0
                    for a in 0..<size { dot += ys[a * inner] * gs[a * inner] }
                    for a in 0..<size { ds[a * inner] = ys[a * inner] * (gs[a * inner] - dot) }
                }
            }
        }
        return dx
    }
}
