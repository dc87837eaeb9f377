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
        let (s, p) = (stride, padding)
        argmax.withUnsafeMutableBufferPointer { arg in
            let (arg, src, dst) = (arg.baseAddress!, UnsafePointer(x.data), y.data)
            // The window's rows and columns inside the image, per output row and column, so the scan over a plane
            // has no bounds tests: ranges of ki and kj for each oh and ow.
            let rows = (0..<ho).map { windowRange(start: $0 * s - p, length: h) }
            let columns = (0..<wo).map { windowRange(start: $0 * s - p, length: w) }
            parallelChunks(n * c, minimumPerChunk: 4) { p0, p1 in
                for plane in p0..<p1 {
                    let planeIn = src + plane * h * w
                    let (planeOut, planeArg) = (dst + plane * ho * wo, arg + plane * ho * wo)
                    for oh in 0..<ho {
                        let rowRange = rows[oh]
                        for ow in 0..<wo {
                            let columnRange = columns[ow]
                            // The first maximum in scan order; a NaN wins (the last one), as PyTorch's max_pool2d.
                            var bestIndex = rowRange.lowerBound * w + columnRange.lowerBound
                            var best = planeIn[bestIndex]
                            for ih in rowRange {
                                for iw in columnRange {
                                    let (index, v) = (ih * w + iw, planeIn[ih * w + iw])
                                    let wins = v > best || v.isNaN
                                    best = wins ? v : best
                                    bestIndex = wins ? index : bestIndex
                                }
                            }
                            planeOut[oh * wo + ow] = best
                            planeArg[oh * wo + ow] = Int32(bestIndex)
                        }
                    }
                }
            }
        }
        return y
    }

    /// Input rows (or columns) [start, start + kernel) clipped to [0, length).
    private func windowRange(start: Int, length: Int) -> Range<Int> {
        Swift.max(start, 0)..<Swift.min(start + kernel, length)
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
