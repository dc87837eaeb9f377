/// The shape arithmetic of one 2-D convolution (or pooling window) over a C×H×W image.
public struct ConvGeometry: Equatable {
    public let channels, height, width: Int
    public let kernelH, kernelW: Int
    public let stride, padding, dilation: Int

    public init(channels: Int, height: Int, width: Int, kernelH: Int, kernelW: Int,
                stride: Int = 1, padding: Int = 0, dilation: Int = 1) {
        self.channels = channels; self.height = height; self.width = width
        self.kernelH = kernelH; self.kernelW = kernelW
        self.stride = stride; self.padding = padding; self.dilation = dilation
    }

    public var outHeight: Int { (height + 2 * padding - dilation * (kernelH - 1) - 1) / stride + 1 }
    public var outWidth: Int { (width + 2 * padding - dilation * (kernelW - 1) - 1) / stride + 1 }
    /// Rows of the column matrix: one per (channel, kernel row, kernel column).
    public var columnRows: Int { channels * kernelH * kernelW }
    public var outPixels: Int { outHeight * outWidth }

    /// Output columns `lo..<hi` whose input column `ow·stride − padding + kj·dilation` lies inside the image.
    @inline(__always)
    func validColumns(kernelColumn kj: Int) -> (Int, Int) {
        let shift = padding - kj * dilation                    // iw = ow·stride − shift
        let lo = shift <= 0 ? 0 : (shift + stride - 1) / stride
        let hiRaw = width - 1 + shift
        let hi = hiRaw < 0 ? 0 : Swift.min(outWidth, hiRaw / stride + 1)
        return (Swift.min(lo, hi), hi)
    }
}

// x: C×H×W → col: (C·kh·kw)×(Ho·Wo). Row (c, ki, kj) holds x[c, oh·s − p + ki·d, ow·s − p + kj·d], zero outside.
public func im2col(_ x: UnsafePointer<Float>, _ g: ConvGeometry, _ col: UnsafeMutablePointer<Float>) {
    let (ho, wo, hw) = (g.outHeight, g.outWidth, g.height * g.width)
    let kk = g.kernelH * g.kernelW
    parallelChunks(g.channels, minimumPerChunk: Swift.max(1, 16384 / Swift.max(kk * g.outPixels, 1))) { c0, c1 in
        for c in c0..<c1 {
            let plane = x + c * hw
            for ki in 0..<g.kernelH {
                for kj in 0..<g.kernelW {
                    let row = col + ((c * g.kernelH + ki) * g.kernelW + kj) * ho * wo
                    let (lo, hi) = g.validColumns(kernelColumn: kj)
                    let colShift = kj * g.dilation - g.padding
                    for oh in 0..<ho {
                        let dst = row + oh * wo
                        let ih = oh * g.stride - g.padding + ki * g.dilation
                        if ih < 0 || ih >= g.height || lo >= hi {
                            dst.update(repeating: 0, count: wo)
                            continue
                        }
                        if lo > 0 { dst.update(repeating: 0, count: lo) }
                        if hi < wo { (dst + hi).update(repeating: 0, count: wo - hi) }
                        let src = plane + ih * g.width + colShift
                        if g.stride == 1 {
                            (dst + lo).update(from: src + lo, count: hi - lo)
                        } else {
                            for ow in lo..<hi { dst[ow] = src[ow * g.stride] }
                        }
                    }
                }
            }
        }
    }
}

// col: (C·kh·kw)×(Ho·Wo) → dx: C×H×W, accumulating (dx += scatter of col): the adjoint of im2col.
public func col2im(_ col: UnsafePointer<Float>, _ g: ConvGeometry, _ dx: UnsafeMutablePointer<Float>) {
    let (ho, wo, hw) = (g.outHeight, g.outWidth, g.height * g.width)
    let kk = g.kernelH * g.kernelW
    parallelChunks(g.channels, minimumPerChunk: Swift.max(1, 16384 / Swift.max(kk * g.outPixels, 1))) { c0, c1 in
        for c in c0..<c1 {
            let plane = dx + c * hw
            for ki in 0..<g.kernelH {
                for kj in 0..<g.kernelW {
                    let row = col + ((c * g.kernelH + ki) * g.kernelW + kj) * ho * wo
                    let (lo, hi) = g.validColumns(kernelColumn: kj)
                    if lo >= hi { continue }
                    let colShift = kj * g.dilation - g.padding
                    for oh in 0..<ho {
                        let ih = oh * g.stride - g.padding + ki * g.dilation
                        if ih < 0 || ih >= g.height { continue }
                        let src = row + oh * wo
                        let dst = plane + ih * g.width + colShift
                        if g.stride == 1 {
                            for ow in lo..<hi { dst[ow] += src[ow] }
                        } else {
                            for ow in lo..<hi { dst[ow * g.stride] += src[ow] }
                        }
                    }
                }
            }
        }
    }
}

/// Direct 7-loop convolution of one image, the reference the im2col + GEMM path is tested against.
/// x: C×H×W, w: O×C×kh×kw → y: O×Ho×Wo (overwritten).
public func naiveConvolution(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, outChannels: Int,
                             _ g: ConvGeometry, _ y: UnsafeMutablePointer<Float>) {
    for o in 0..<outChannels {
        for oh in 0..<g.outHeight {
            for ow in 0..<g.outWidth {
                var s = 0.0
                for c in 0..<g.channels {
                    for ki in 0..<g.kernelH {
                        let ih = oh * g.stride - g.padding + ki * g.dilation
                        if ih < 0 || ih >= g.height { continue }
                        for kj in 0..<g.kernelW {
                            let iw = ow * g.stride - g.padding + kj * g.dilation
                            if iw < 0 || iw >= g.width { continue }
                            s += Double(x[(c * g.height + ih) * g.width + iw])
                                * Double(w[((o * g.channels + c) * g.kernelH + ki) * g.kernelW + kj])
                        }
                    }
                }
                y[(o * g.outHeight + oh) * g.outWidth + ow] = Float(s)
            }
        }
    }
}
