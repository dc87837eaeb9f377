/// Resampling of 8-bit images and label maps. Each function produces a *window* `[x0, x0+w) × [y0, y0+h)` of the
/// image resized to `targetWidth × targetHeight`, so RandomResize followed by RandomCrop computes only the cropped
/// pixels (at ratio 2 a Cityscapes image would otherwise be resized to 4096×2048 to keep an eighth of it).
/// Both are OpenCV's, as mmcv's default backend gives them to mmseg (bilinear images, nearest labels).
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

/// OpenCV's `cv2.resize(…, INTER_LINEAR)` on uint8, bit for bit (what mmcv's default cv2 backend gives mmseg):
/// half-pixel centres computed in float32, source x = (x + 0.5)·(W/targetW) − 0.5, and 11-bit fixed-point weights,
/// each tap's weight rounded on its own (so a pair may sum to 2047 or 2049). Horizontal pass: integer sums
/// S = p₀·α₀ + p₁·α₁ (one tap ·2048 at the right border, left border clamped); vertical pass:
///   out = ((β₀·(S₀ >> 4)) >> 16) + ((β₁·(S₁ >> 4)) >> 16) + 2) >> 2
/// with rows clamped to the image but β from the unclamped position, as OpenCV computes it. H×W×C uint8 → only
/// `window` of the resized image: window.height × window.width × C.
public func resizeBilinear(_ image: PixelImage, _ window: ResizeWindow) -> PixelImage {
    let channels = image.channels, srcW = image.width, srcH = image.height
    let columns = linearTaps(count: window.width, from: window.x0, target: window.targetWidth, source: srcW,
                             clampWeights: true)
    let rows = linearTaps(count: window.height, from: window.y0, target: window.targetHeight, source: srcH,
                          clampWeights: false)
    var output = PixelImage(width: window.width, height: window.height, channels: channels)
    let rowLength = window.width * channels
    image.pixels.withUnsafeBufferPointer { source in
        output.pixels.withUnsafeMutableBufferPointer { destination in
            let src = source.baseAddress!, dst = destination.baseAddress!
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: 2 * rowLength) { sums in
                let (upper, lower) = (sums.baseAddress!, sums.baseAddress! + rowLength)
                // S for one source row at every output column of the window.
                func horizontal(_ row: Int, into out: UnsafeMutablePointer<Int32>) {
                    let line = src + row * srcW * channels
                    for (i, tap) in columns.enumerated() {
                        let (left, right) = (line + tap.first * channels, line + tap.second * channels)
                        for c in 0..<channels {
                            out[i * channels + c] = Int32(left[c]) * tap.weights.0 + Int32(right[c]) * tap.weights.1
                        }
                    }
                }
                for (j, tap) in rows.enumerated() {
                    horizontal(tap.first, into: upper)
                    horizontal(tap.second, into: lower)
                    let (b0, b1) = tap.weights
                    let out = dst + j * rowLength
                    for k in 0..<rowLength {
                        let value = ((b0 * (upper[k] >> 4)) >> 16) + ((b1 * (lower[k] >> 4)) >> 16) + 2
                        out[k] = UInt8(clamping: value >> 2)
                    }
                }
            }
        }
    }
    return output
}

/// One output coordinate's two source samples and their 11-bit weights (OpenCV's xofs/ialpha and yofs/ibeta).
struct LinearTap {
    var first: Int, second: Int
    var weights: (Int32, Int32)
}

/// Taps for output coordinates `from..<from+count` of `target` resampled from `source`. Columns clamp the position
/// and weight at the borders (`clampWeights`); rows clamp only the row index, keeping the unclamped weights.
func linearTaps(count: Int, from start: Int, target: Int, source: Int, clampWeights: Bool) -> [LinearTap] {
    let scale = 1 / (Double(target) / Double(source))
    func fixed(_ weight: Float) -> Int32 { Int32((weight * 2048).rounded(.toNearestOrEven)) }
    return (start..<start + count).map { x in
        var position = Float((Double(x) + 0.5) * scale - 0.5)
        var index = Int(position.rounded(.down))
        position -= Float(index)
        guard clampWeights else {
            return LinearTap(first: min(max(index, 0), source - 1), second: min(max(index + 1, 0), source - 1),
                             weights: (fixed(1 - position), fixed(position)))
        }
        if index < 0 { (index, position) = (0, 0) }
        if index + 1 >= source {
            let last = min(index, source - 1)
            return LinearTap(first: last, second: last, weights: (2048, 0))
        }
        return LinearTap(first: index, second: index + 1, weights: (fixed(1 - position), fixed(position)))
    }
}

/// OpenCV's `cv2.resize(…, INTER_NEAREST)` of a label map (what mmcv gives mmseg for segmentation maps): output
/// pixel x takes source pixel ⌊x·(W/targetW)⌋, clamped; computing only `window`.
public func resizeNearest(_ label: LabelImage, _ window: ResizeWindow) -> LabelImage {
    let srcW = label.width, srcH = label.height
    let scaleX = 1 / (Double(window.targetWidth) / Double(srcW)), scaleY = 1 / (Double(window.targetHeight) / Double(srcH))
    let columns = (0..<window.width).map { min(Int((Double(window.x0 + $0) * scaleX).rounded(.down)), srcW - 1) }
    var output = LabelImage(width: window.width, height: window.height, filledWith: 0)
    label.values.withUnsafeBufferPointer { source in
        output.values.withUnsafeMutableBufferPointer { destination in
            for j in 0..<window.height {
                let sourceRow = min(Int((Double(window.y0 + j) * scaleY).rounded(.down)), srcH - 1)
                let row = source.baseAddress! + sourceRow * srcW
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
