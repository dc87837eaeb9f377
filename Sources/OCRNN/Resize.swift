import OCRTensor

/// For one axis of a bilinear resize: output index → the two source indices and their weights, as PyTorch's
/// `upsample_bilinear2d` computes them (align_corners false: src = (dst + 0.5)·in/out − 0.5 clamped at 0;
/// true: src = dst·(in − 1)/(out − 1)).
struct LinearTaps {
    var low: [Int32], high: [Int32], lowWeight: [Float], highWeight: [Float]

    init(input: Int, output: Int, alignCorners: Bool) {
        low = []; high = []; lowWeight = []; highWeight = []
        let scale: Double = alignCorners
            ? (output > 1 ? Double(input - 1) / Double(output - 1) : 0)
            : Double(input) / Double(output)
        for d in 0..<output {
            var src = alignCorners ? scale * Double(d) : scale * (Double(d) + 0.5) - 0.5
            if src < 0 { src = 0 }
            let i0 = Swift.min(Int(src), input - 1)
            let i1 = i0 < input - 1 ? i0 + 1 : i0
            let l1 = Float(src - Double(i0))
            low.append(Int32(i0)); high.append(Int32(i1))
            lowWeight.append(1 - l1); highWeight.append(l1)
        }
    }
}

/// Bilinear resize of every channel to a given size. x: N×C×H×W → y: N×C×Ho×Wo.
public final class BilinearResize {
    public let alignCorners: Bool
    private var inputShape: [Int] = []
    private var rows: LinearTaps?
    private var cols: LinearTaps?

    public init(alignCorners: Bool = false) { self.alignCorners = alignCorners }

    private func taps(_ input: [Int], _ outH: Int, _ outW: Int) -> (LinearTaps, LinearTaps) {
        if inputShape == input, let rows, let cols, rows.low.count == outH, cols.low.count == outW {
            return (rows, cols)
        }
        let r = LinearTaps(input: input[2], output: outH, alignCorners: alignCorners)
        let c = LinearTaps(input: input[3], output: outW, alignCorners: alignCorners)
        inputShape = input; rows = r; cols = c
        return (r, c)
    }

    public func forward(_ x: Tensor, height outH: Int, width outW: Int) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("BilinearResize.forward", timing) }
        let (h, w) = (x.shape[2], x.shape[3])
        let (r, c) = taps(x.shape, outH, outW)
        let y = Tensor.transient(shape: [x.shape[0], x.shape[1], outH, outW])
        parallelChunks(x.shape[0] * x.shape[1], minimumPerChunk: Swift.max(1, 16384 / Swift.max(outH * outW, 1))) { p0, p1 in
            for plane in p0..<p1 {
                let src = x.data + plane * h * w
                let dst = y.data + plane * outH * outW
                for oh in 0..<outH {
                    let top = src + Int(r.low[oh]) * w, bottom = src + Int(r.high[oh]) * w
                    let (wt, wb) = (r.lowWeight[oh], r.highWeight[oh])
                    let out = dst + oh * outW
                    for ow in 0..<outW {
                        let (i0, i1) = (Int(c.low[ow]), Int(c.high[ow]))
                        out[ow] = wt * (c.lowWeight[ow] * top[i0] + c.highWeight[ow] * top[i1])
                            + wb * (c.lowWeight[ow] * bottom[i0] + c.highWeight[ow] * bottom[i1])
                    }
                }
            }
        }
        return y
    }

    /// dy: N×C×Ho×Wo → dx: N×C×H×W, each output gradient spread over its four source pixels.
    public func backward(_ dy: Tensor) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("BilinearResize.backward", timing) }
        guard let r = rows, let c = cols else { preconditionFailure("resize backward before forward") }
        let (h, w, outH, outW) = (inputShape[2], inputShape[3], dy.shape[2], dy.shape[3])
        let dx = Tensor.transient(shape: inputShape)
        dx.zero()
        parallelChunks(inputShape[0] * inputShape[1], minimumPerChunk: Swift.max(1, 16384 / Swift.max(outH * outW, 1))) { p0, p1 in
            for plane in p0..<p1 {
                let src = dy.data + plane * outH * outW
                let dst = dx.data + plane * h * w
                for oh in 0..<outH {
                    let top = dst + Int(r.low[oh]) * w, bottom = dst + Int(r.high[oh]) * w
                    let (wt, wb) = (r.lowWeight[oh], r.highWeight[oh])
                    let g = src + oh * outW
                    for ow in 0..<outW {
                        let (i0, i1) = (Int(c.low[ow]), Int(c.high[ow]))
                        let (g0, g1) = (g[ow] * c.lowWeight[ow], g[ow] * c.highWeight[ow])
                        top[i0] += wt * g0; top[i1] += wt * g1
                        bottom[i0] += wb * g0; bottom[i1] += wb * g1
                    }
                }
            }
        }
        return dx
    }
}
