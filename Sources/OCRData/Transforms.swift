import Foundation
import OCRTensor

/// One example on its way through the pipeline: image H×W×3 RGB uint8 and, in training, its label H×W.
/// In evaluation `label` is nil: labels are never resized, the evaluator compares at their original size.
///
/// A resize is recorded, not performed (`pendingSize`), until a transform needs the pixels; RandomCrop then
/// resamples only its window. `width`/`height` are the logical (post-resize) size.
public struct AugmentedSample {
    public private(set) var image: PixelImage
    public private(set) var label: LabelImage?
    private var pendingSize: (width: Int, height: Int)?

    public init(image: PixelImage, label: LabelImage?) {
        precondition(image.channels == 3, "pipeline images are RGB")
        precondition(label == nil || (label!.width == image.width && label!.height == image.height),
                     "label and image sizes differ")
        self.image = image
        self.label = label
    }

    public var width: Int { pendingSize?.width ?? image.width }
    public var height: Int { pendingSize?.height ?? image.height }

    mutating func resize(width: Int, height: Int) {
        pendingSize = (width, height)
    }

    /// Performs a recorded resize (bilinear image, nearest label).
    public mutating func materialize() {
        guard let size = pendingSize else { return }
        crop(x0: 0, y0: 0, width: size.width, height: size.height)
    }

    /// Keeps the window [x0, x0+width) × [y0, y0+height) of the logical image, resampling at the same time if a
    /// resize is pending.
    mutating func crop(x0: Int, y0: Int, width: Int, height: Int) {
        let window = ResizeWindow(targetWidth: self.width, targetHeight: self.height,
                                  x0: x0, y0: y0, width: width, height: height)
        if let size = pendingSize, size.width != image.width || size.height != image.height {
            image = resizeBilinear(image, window)
            label = label.map { resizeNearest($0, window) }
        } else {
            image = cropPixels(image, window)
            label = label.map { LabelImage(width: width, height: height, values: cropPixels(
                PixelImage(width: $0.width, height: $0.height, channels: 1, pixels: $0.values), window).pixels) }
        }
        pendingSize = nil
    }

    /// The label window a crop would keep, without keeping it (for cat_max_ratio).
    func labelWindow(x0: Int, y0: Int, width: Int, height: Int) -> LabelImage? {
        label.map { resizeNearest($0, ResizeWindow(targetWidth: self.width, targetHeight: self.height,
                                                   x0: x0, y0: y0, width: width, height: height)) }
    }

    mutating func flipHorizontally() {
        materialize()
        image = mirrored(image)
        label = label.map { LabelImage(width: $0.width, height: $0.height,
                                       values: mirrored(PixelImage(width: $0.width, height: $0.height, channels: 1,
                                                                   pixels: $0.values)).pixels) }
    }

    mutating func mapPixels(_ body: (inout PixelImage) -> Void) {
        materialize()
        body(&image)
    }
}

private func cropPixels(_ image: PixelImage, _ window: ResizeWindow) -> PixelImage {
    var output = PixelImage(width: window.width, height: window.height, channels: image.channels)
    let rowBytes = window.width * image.channels
    image.pixels.withUnsafeBufferPointer { source in
        output.pixels.withUnsafeMutableBufferPointer { destination in
            for j in 0..<window.height {
                let from = source.baseAddress! + ((window.y0 + j) * image.width + window.x0) * image.channels
                (destination.baseAddress! + j * rowBytes).update(from: from, count: rowBytes)
            }
        }
    }
    return output
}

private func mirrored(_ image: PixelImage) -> PixelImage {
    var output = image
    let channels = image.channels, width = image.width
    image.pixels.withUnsafeBufferPointer { source in
        output.pixels.withUnsafeMutableBufferPointer { destination in
            for y in 0..<image.height {
                let row = source.baseAddress! + y * width * channels
                let out = destination.baseAddress! + y * width * channels
                for x in 0..<width {
                    for c in 0..<channels { out[x * channels + c] = row[(width - 1 - x) * channels + c] }
                }
            }
        }
    }
    return output
}

// MARK: - Transforms (mmseg names and defaults)

/// mmseg `RandomResize`: ratio r ~ U(ratio_range); the target is scale·r, fitted keeping the aspect ratio
/// (keep_ratio, as every mmseg segmentation config sets) or taken as is. `scale` is (width, height) as in mmcv.
public struct RandomResize: Equatable {
    public var scale: (width: Int, height: Int)
    public var ratioRange: ClosedRange<Double>
    public var keepRatio: Bool

    public init(scale: (width: Int, height: Int), ratioRange: ClosedRange<Double> = 0.5...2.0, keepRatio: Bool = true) {
        self.scale = scale
        self.ratioRange = ratioRange
        self.keepRatio = keepRatio
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.scale == b.scale && a.ratioRange == b.ratioRange && a.keepRatio == b.keepRatio
    }

    func apply(_ sample: inout AugmentedSample, _ rng: inout SplitMix64) {
        let ratio = ratioRange.lowerBound + rng.uniform() * (ratioRange.upperBound - ratioRange.lowerBound)
        let target = (width: max(Int(Double(scale.width) * ratio), 1), height: max(Int(Double(scale.height) * ratio), 1))
        Resize(scale: target, keepRatio: keepRatio).apply(&sample)
    }
}

/// mmseg `Resize` (the evaluation resize): to `scale` (width, height), fitted keeping the aspect ratio or exact.
public struct Resize: Equatable {
    public var scale: (width: Int, height: Int)
    public var keepRatio: Bool

    public init(scale: (width: Int, height: Int), keepRatio: Bool = true) {
        self.scale = scale
        self.keepRatio = keepRatio
    }

    public static func == (a: Self, b: Self) -> Bool { a.scale == b.scale && a.keepRatio == b.keepRatio }

    func apply(_ sample: inout AugmentedSample) {
        let size = keepRatio ? rescaledSize(width: sample.width, height: sample.height, toFit: scale) : scale
        sample.resize(width: size.width, height: size.height)
    }
}

/// mmseg `RandomCrop`: a uniformly placed crop of (at most) `cropSize` (height, width). With cat_max_ratio < 1 the
/// crop is redrawn up to 10 times until its label has at least two classes and none covers cat_max_ratio or
/// more of the non-ignored pixels; the last draw is kept regardless.
public struct RandomCrop: Equatable {
    public static let redraws = 10

    public var cropSize: (height: Int, width: Int)
    public var catMaxRatio: Double
    public var ignoreIndex: UInt8

    public init(cropSize: (height: Int, width: Int), catMaxRatio: Double = 1.0, ignoreIndex: UInt8 = 255) {
        self.cropSize = cropSize
        self.catMaxRatio = catMaxRatio
        self.ignoreIndex = ignoreIndex
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.cropSize == b.cropSize && a.catMaxRatio == b.catMaxRatio && a.ignoreIndex == b.ignoreIndex
    }

    func apply(_ sample: inout AugmentedSample, _ rng: inout SplitMix64) {
        let height = min(cropSize.height, sample.height), width = min(cropSize.width, sample.width)
        func draw() -> (x: Int, y: Int) {
            let y = Int(rng.next() % UInt64(sample.height - height + 1))
            let x = Int(rng.next() % UInt64(sample.width - width + 1))
            return (x, y)
        }
        var origin = draw()
        if catMaxRatio < 1, sample.label != nil {
            for _ in 0..<Self.redraws {
                let window = sample.labelWindow(x0: origin.x, y0: origin.y, width: width, height: height)!
                if isBalanced(window) { break }
                origin = draw()
            }
        }
        sample.crop(x0: origin.x, y0: origin.y, width: width, height: height)
    }

    /// At least two classes and no class with a share ≥ cat_max_ratio of the non-ignored pixels.
    public func isBalanced(_ label: LabelImage) -> Bool {
        var counts = [Int](repeating: 0, count: 256)
        for v in label.values { counts[Int(v)] += 1 }
        counts[Int(ignoreIndex)] = 0
        let total = counts.reduce(0, +)
        let present = counts.filter { $0 > 0 }
        guard present.count > 1, total > 0 else { return false }
        return Double(present.max()!) / Double(total) < catMaxRatio
    }
}

/// mmseg `RandomFlip`: horizontal mirror with probability `prob`.
public struct RandomFlip: Equatable {
    public var prob: Double

    public init(prob: Double = 0.5) { self.prob = prob }

    func apply(_ sample: inout AugmentedSample, _ rng: inout SplitMix64) {
        if rng.uniform() < prob { sample.flipHorizontally() }
    }
}

/// mmseg `PhotoMetricDistortion`, each step with probability ½, every step clipping to [0, 255] and truncating to
/// uint8 as mmcv does: brightness + U(±brightness_delta); contrast × U(contrast_range), either first or last (a
/// coin); then in OpenCV's uint8 HSV (H in [0, 180)) saturation × U(saturation_range) and hue + an integer in
/// [−hue_delta, hue_delta] modulo 180. Saturation and hue share one HSV round trip (mmcv converts twice; the
/// difference is uint8 rounding). Only the image changes.
public struct PhotoMetricDistortion: Equatable {
    public var brightnessDelta: Double
    public var contrastRange: ClosedRange<Double>
    public var saturationRange: ClosedRange<Double>
    public var hueDelta: Int

    public init(brightnessDelta: Double = 32, contrastRange: ClosedRange<Double> = 0.5...1.5,
                saturationRange: ClosedRange<Double> = 0.5...1.5, hueDelta: Int = 18) {
        self.brightnessDelta = brightnessDelta
        self.contrastRange = contrastRange
        self.saturationRange = saturationRange
        self.hueDelta = hueDelta
    }

    /// The draws for one sample (nil = step skipped), all taken in a fixed order.
    public struct Draws: Equatable {
        public var brightness: Double?
        public var contrast: Double?
        public var contrastFirst: Bool
        public var saturation: Double?
        public var hue: Int?

        public init(brightness: Double?, contrast: Double?, contrastFirst: Bool, saturation: Double?, hue: Int?) {
            self.brightness = brightness
            self.contrast = contrast
            self.contrastFirst = contrastFirst
            self.saturation = saturation
            self.hue = hue
        }
    }

    public func draw(_ rng: inout SplitMix64) -> Draws {
        func coin() -> Bool { rng.next() & 1 == 1 }
        func uniform(_ range: ClosedRange<Double>) -> Double {
            range.lowerBound + rng.uniform() * (range.upperBound - range.lowerBound)
        }
        let brightness = coin() ? uniform(-brightnessDelta...brightnessDelta) : nil
        let contrastFirst = coin()
        let contrast = coin() ? uniform(contrastRange) : nil
        let saturation = coin() ? uniform(saturationRange) : nil
        let hue = coin() ? Int(rng.next() % UInt64(2 * hueDelta + 1)) - hueDelta : nil
        return Draws(brightness: brightness, contrast: contrast, contrastFirst: contrastFirst,
                     saturation: saturation, hue: hue)
    }

    func apply(_ sample: inout AugmentedSample, _ rng: inout SplitMix64) {
        let draws = draw(&rng)
        sample.mapPixels { Self.distort(&$0, draws) }
    }

    /// Applies `draws` to an RGB image in place.
    public static func distort(_ image: inout PixelImage, _ draws: Draws) {
        precondition(image.channels == 3)
        // Brightness and contrast are per-value maps: compose the ones before the HSV part into one table.
        var before = identityTable, after = identityTable
        if let beta = draws.brightness { before = before.map { clippedTruncated(Double($0) + beta) } }
        if let alpha = draws.contrast {
            if draws.contrastFirst {
                before = before.map { clippedTruncated(Double($0) * alpha) }
            } else {
                after = after.map { clippedTruncated(Double($0) * alpha) }
            }
        }
        image.pixels.withUnsafeMutableBufferPointer { pixels in
            before.withUnsafeBufferPointer { table in
                for i in 0..<pixels.count { pixels[i] = table[Int(pixels[i])] }
            }
            if draws.saturation != nil || draws.hue != nil {
                let saturationTable = identityTable.map { clippedTruncated(Double($0) * (draws.saturation ?? 1)) }
                let hueShift = draws.hue ?? 0
                for p in stride(from: 0, to: pixels.count, by: 3) {
                    var (h, s, v) = rgbToHSV(pixels[p], pixels[p + 1], pixels[p + 2])
                    s = saturationTable[Int(s)]
                    h = ((h + hueShift) % 180 + 180) % 180
                    (pixels[p], pixels[p + 1], pixels[p + 2]) = hsvToRGB(h, s, v)
                }
            }
            after.withUnsafeBufferPointer { table in
                for i in 0..<pixels.count { pixels[i] = table[Int(pixels[i])] }
            }
        }
    }
}

private let identityTable: [UInt8] = (0...255).map { UInt8($0) }

/// numpy's `np.clip(x, 0, 255).astype(np.uint8)`: clip, then truncate toward zero.
@inline(__always)
func clippedTruncated(_ x: Double) -> UInt8 { UInt8(min(max(x, 0), 255)) }

/// OpenCV's 8-bit RGB→HSV: V = max, S = 255·(V − min)/V, H = hue in degrees / 2 ∈ [0, 180), all rounded.
@inline(__always)
public func rgbToHSV(_ r8: UInt8, _ g8: UInt8, _ b8: UInt8) -> (h: Int, s: UInt8, v: UInt8) {
    let r = Int(r8), g = Int(g8), b = Int(b8)
    let v = max(r, g, b), delta = v - min(r, g, b)
    guard delta > 0 else { return (0, 0, UInt8(v)) }
    let s = UInt8((Double(255 * delta) / Double(v)).rounded())
    var degrees: Double
    if v == r {
        degrees = 60 * Double(g - b) / Double(delta)
    } else if v == g {
        degrees = 120 + 60 * Double(b - r) / Double(delta)
    } else {
        degrees = 240 + 60 * Double(r - g) / Double(delta)
    }
    if degrees < 0 { degrees += 360 }
    return (Int((degrees / 2).rounded()) % 180, s, UInt8(v))
}

/// OpenCV's 8-bit HSV→RGB (H in [0, 180) half-degrees), rounded.
@inline(__always)
public func hsvToRGB(_ h: Int, _ s8: UInt8, _ v8: UInt8) -> (UInt8, UInt8, UInt8) {
    let s = Double(s8) / 255, v = Double(v8)
    let sector = Double(h) / 30 // hue in degrees / 60
    let index = Int(sector) % 6, fraction = sector - Double(Int(sector))
    let p = v * (1 - s), q = v * (1 - s * fraction), t = v * (1 - s * (1 - fraction))
    let (r, g, b): (Double, Double, Double)
    switch index {
    case 0: (r, g, b) = (v, t, p)
    case 1: (r, g, b) = (q, v, p)
    case 2: (r, g, b) = (p, v, t)
    case 3: (r, g, b) = (p, q, v)
    case 4: (r, g, b) = (t, p, v)
    default: (r, g, b) = (v, p, q)
    }
    return (UInt8(r.rounded()), UInt8(g.rounded()), UInt8(b.rounded()))
}

/// One pipeline step.
public enum Transform: Equatable {
    case randomResize(RandomResize)
    case resize(Resize)
    case randomCrop(RandomCrop)
    case randomFlip(RandomFlip)
    case photoMetricDistortion(PhotoMetricDistortion)
}
