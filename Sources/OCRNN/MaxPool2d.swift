import OCRTensor

/// Max pooling k×k, stride s, padding p (implicit −∞ padding). x: N×C×H×W → y: N×C×Ho×Wo.
/// Ties go to the first maximum in row-major window order, as PyTorch's CPU kernel does; backward routes each
/// output gradient to that input position.
public final class MaxPool2d {
    public let kernel, stride, padding: Int
    private var inputShape: [Int] = []
    private var argmax: [Int32] = []

    public init(kernel: Int = 3, stride: Int = 2, padding: Int = 1) {
        self.kernel = kernel; self.stride = stride; self.padding = padding
    }

    public func forward(_ x: Tensor) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("MaxPool2d.forward", timing) }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let ho = (h + 2 * padding - kernel) / stride + 1
        let wo = (w + 2 * padding - kernel) / stride + 1
        let y = Tensor.transient(shape: [n, c, ho, wo])
        inputShape = x.shape
        if argmax.count != y.count { argmax = Array(repeating: 0, count: y.count) }
        let (k, s, p) = (kernel, stride, padding)
        argmax.withUnsafeMutableBufferPointer { arg in
            let arg = arg.baseAddress!
            parallelChunks(n * c, minimumPerChunk: 4) { p0, p1 in
                for plane in p0..<p1 {
                    let src = x.data + plane * h * w
                    for oh in 0..<ho {
                        for ow in 0..<wo {
                            var best = -Float.infinity
                            var bestIndex = -1
                            for ki in 0..<k {
                                let ih = oh * s - p + ki
                                if ih < 0 || ih >= h { continue }
                                for kj in 0..<k {
                                    let iw = ow * s - p + kj
                                    if iw < 0 || iw >= w { continue }
                                    let v = src[ih * w + iw]
                                    if v > best || v.isNaN || bestIndex < 0 { best = v; bestIndex = ih * w + iw }
                                }
                            }
                            let o = (plane * ho + oh) * wo + ow
                            y.data[o] = best
                            arg[o] = Int32(bestIndex)
                        }
                    }
                }
            }
        }
        return y
    }

    public func backward(_ dy: Tensor) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("MaxPool2d.backward", timing) }
        let dx = Tensor.transient(shape: inputShape)
        dx.zero()
        let hw = inputShape[2] * inputShape[3]
        let outPerPlane = dy.shape[2] * dy.shape[3]
        argmax.withUnsafeBufferPointer { arg in
            parallelChunks(inputShape[0] * inputShape[1], minimumPerChunk: 4) { p0, p1 in
                for plane in p0..<p1 {
                    let d = dx.data + plane * hw
                    for o in (plane * outPerPlane)..<((plane + 1) * outPerPlane) { d[Int(arg[o])] += dy.data[o] }
                }
            }
        }
        return dx
    }
}
