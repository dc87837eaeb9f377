/// Resampling of 8-bit images and label maps. Each function produces a *window* `[x0, x0+w) × [y0, y0+h)` of the
/// image resized to `targetWidth × targetHeight`, so RandomResize followed by RandomCrop computes only the cropped
/// pixels (at ratio 2 a Cityscapes image would otherwise be resized to 4096×2048 to keep an eighth of it).
/// Both use half-pixel centres (align_corners = false): source x = (x + 0.5)·(W/targetW) − 0.5, which keeps a
/// label pixel on top of its image pixel.
public struct ResizeWindow: Equatable {
    public var targetWidth: Int, targetHeight: Int
    public var x0: Int, y0: Int, width: Int, height: Int

    /// The whole resized image.
    public init(targetWidth: Int, targetHeight: Int) {
        self.init(targetWidth: targetWidth, targetHeight: targetHeight,
                  x0: 0, y0: 0, width: targetWidth, height: targetHeight)
    }

    public init(targetWidth: Int, targetHeight: Int, x0: Int, y0: Int, width: Int, height: Int) {
        precondition(x0 >= 0 && y0 >= 0 && x0 + width <= targetWidth && y0 + height <= targetHeight,
                     "window \(x0),\(y0) \(width)×\(height) outside \(targetWidth)×\(targetHeight)")
        self.targetWidth = targetWidth
        self.targetHeight = targetHeight
        self.x0 = x0
        self.y0 = y0
        self.width = width
        self.height = height
    }
}

/// Bilinear resize (OpenCV INTER_LINEAR semantics: half-pixel centres, edge samples clamped, result rounded to
/// nearest) of an H×W×C uint8 image, computing only `window`. Output: window.height × window.width × C.
public func resizeBilinear(_ image: PixelImage, _ window: ResizeWindow) -> PixelImage {
    let channels = image.channels, srcW = image.width, srcH = image.height
    let scaleX = Double(srcW) / Double(window.targetWidth), scaleY = Double(srcH) / Double(window.targetHeight)
    // Per output column: left source column (times channels) and the weight of the right neighbour.
    var columnOffset = [Int](repeating: 0, count: window.width)
    var columnStep = [Int](repeating: 0, count: window.width)
    var columnWeight = [Float](repeating: 0, count: window.width)
    for i in 0..<window.width {
        let sx = max((Double(window.x0 + i) + 0.5) * scaleX - 0.5, 0)
        let left = min(Int(sx), srcW - 1)
        columnOffset[i] = left * channels
        columnStep[i] = left + 1 < srcW ? channels : 0
        columnWeight[i] = Float(sx - Double(left))
    }
    var output = PixelImage(width: window.width, height: window.height, channels: channels)
    image.pixels.withUnsafeBufferPointer { source in
        output.pixels.withUnsafeMutableBufferPointer { destination in
            let src = source.baseAddress!, dst = destination.baseAddress!
            for j in 0..<window.height {
                let sy = max((Double(window.y0 + j) + 0.5) * scaleY - 0.5, 0)
                let top = min(Int(sy), srcH - 1)
                let bottom = min(top + 1, srcH - 1)
                let wy = Float(sy - Double(top))
                let rowTop = src + top * srcW * channels, rowBottom = src + bottom * srcW * channels
                var out = dst + j * window.width * channels
                for i in 0..<window.width {
                    let o = columnOffset[i], step = columnStep[i], wx = columnWeight[i]
                    for c in 0..<channels {
                        let upper = Float(rowTop[o + c]) + wx * (Float(rowTop[o + step + c]) - Float(rowTop[o + c]))
                        let lower = Float(rowBottom[o + c])
                            + wx * (Float(rowBottom[o + step + c]) - Float(rowBottom[o + c]))
                        out[c] = UInt8(upper + wy * (lower - upper) + 0.5)
                    }
                    out += channels
                }
            }
        }
    }
    return output
}

/// Nearest-neighbour resize of a label map (labels are never interpolated), computing only `window`: the output
/// pixel takes the source pixel whose area contains its centre.
public func resizeNearest(_ label: LabelImage, _ window: ResizeWindow) -> LabelImage {
    let srcW = label.width, srcH = label.height
    let scaleX = Double(srcW) / Double(window.targetWidth), scaleY = Double(srcH) / Double(window.targetHeight)
    let columns = (0..<window.width).map { min(Int((Double(window.x0 + $0) + 0.5) * scaleX), srcW - 1) }
    var output = LabelImage(width: window.width, height: window.height, filledWith: 0)
    label.values.withUnsafeBufferPointer { source in
        output.values.withUnsafeMutableBufferPointer { destination in
            for j in 0..<window.height {
                let row = source.baseAddress! + min(Int((Double(window.y0 + j) + 0.5) * scaleY), srcH - 1) * srcW
                let out = destination.baseAddress! + j * window.width
                for i in 0..<window.width { out[i] = row[columns[i]] }
            }
        }
    }
    return output
}

/// mmcv's `rescale_size` for keep_ratio = true: the largest size with the image's aspect ratio whose long side is
/// ≤ max(scale) and short side ≤ min(scale); sides rounded to nearest. Sizes are (width, height).
public func rescaledSize(width: Int, height: Int, toFit scale: (width: Int, height: Int)) -> (width: Int, height: Int) {
    let longEdge = Double(max(scale.width, scale.height)), shortEdge = Double(min(scale.width, scale.height))
    let factor = min(longEdge / Double(max(width, height)), shortEdge / Double(min(width, height)))
    return (max(Int(Double(width) * factor + 0.5), 1), max(Int(Double(height) * factor + 0.5), 1))
}
