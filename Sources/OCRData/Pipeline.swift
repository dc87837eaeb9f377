import OCRTensor

/// A bad `data:` block or pipeline entry in the config; the description names the key or entry.
public struct DataConfigError: Error, CustomStringConvertible, Equatable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// mmseg's data preprocessor: per-channel (RGB) `(x − mean) / std`, then padding to at least `padSize`
/// (height, width) — in training the RandomCrop size, so every batch has the crop's shape — with `padValue`
/// (in normalised units, 0 as mmseg) for images and 255 for labels.
public struct Normalization: Equatable {
    public var mean: [Float]
    public var std: [Float]

    public init(mean: [Float] = [123.675, 116.28, 103.53], std: [Float] = [58.395, 57.12, 57.375]) {
        precondition(mean.count == 3 && std.count == 3, "mean and std need one value per RGB channel")
        self.mean = mean
        self.std = std
    }

    /// H×W×3 uint8 → 3×H×W normalised planes.
    func planes(_ image: PixelImage) -> Tensor {
        let planes = Tensor(zeros: [3, image.height, image.width])
        let (width, planePitch) = (image.width, image.height * image.width)
        // One table per channel: 3×256 floats replace a subtract and a divide per value.
        var table = [Float](repeating: 0, count: 3 * 256)
        for c in 0..<3 { for v in 0..<256 { table[c * 256 + v] = (Float(v) - mean[c]) / std[c] } }
        image.pixels.withUnsafeBufferPointer { source in
            table.withUnsafeBufferPointer { lookup in
                for y in 0..<image.height {
                    let row = source.baseAddress! + y * width * 3
                    for c in 0..<3 {
                        let out = planes.data + c * planePitch + y * width
                        let channelTable = lookup.baseAddress! + c * 256
                        for x in 0..<width { out[x] = channelTable[Int(row[x * 3 + c])] }
                    }
                }
            }
        }
        return planes
    }
}

/// The augmentation pipeline and the preprocessing after it, built from the config's list of mmseg transforms
/// (`[{type: RandomResize, scale: [2048, 1024], ratio_range: [0.5, 2.0]}, …]`).
///
/// Every random draw of transform k for a sample comes from `SplitMix64(seed, epoch, sampleIndex, k)`, where
/// `sampleIndex` is the sample's index in the dataset: the augmentation of a sample depends on nothing else (not
/// the rank count, not the worker thread, not where a resumed run restarted).
public struct Pipeline: Equatable {
    /// The longest image side a config may ask for (scales, crops, pad sizes): larger values are typos or attacks.
    public static let maximumSide = 1 << 14

    public var transforms: [Transform]
    public var normalization: Normalization
    /// Minimum (height, width) of a batch; nil = pad only to the largest sample of the batch.
    public var padSize: (height: Int, width: Int)?
    public var padValue: Float
    public var labelPadValue: UInt8

    public init(transforms: [Transform], normalization: Normalization = Normalization(),
                padSize: (height: Int, width: Int)? = nil, padValue: Float = 0, labelPadValue: UInt8 = 255) {
        self.transforms = transforms
        self.normalization = normalization
        self.padSize = padSize
        self.padValue = padValue
        self.labelPadValue = labelPadValue
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.transforms == b.transforms && a.normalization == b.normalization && a.padSize?.height == b.padSize?.height
            && a.padSize?.width == b.padSize?.width && a.padValue == b.padValue && a.labelPadValue == b.labelPadValue
    }

    /// Runs the transforms on `sample`; the result has every pending resize performed.
    /// An image as evaluation feeds it to the model: through the pipeline without its label (the evaluation
    /// Resize), normalised. H×W×C uint8 → 3×H′×W′.
    public func evaluationInput(_ image: PixelImage) -> Tensor {
        normalization.planes(apply(AugmentedSample(image: image, label: nil), seed: 0, epoch: 0, sampleIndex: 0).image)
    }


    public func apply(_ sample: AugmentedSample, seed: UInt64, epoch: Int, sampleIndex: Int) -> AugmentedSample {
        var sample = sample
        for (position, transform) in transforms.enumerated() {
            var rng = SplitMix64(seed: seed, UInt64(epoch), UInt64(sampleIndex), UInt64(position))
            switch transform {
            case .randomResize(let t): t.apply(&sample, &rng)
            case .resize(let t): t.apply(&sample)
            case .randomCrop(let t): t.apply(&sample, &rng)
            case .randomFlip(let t): t.apply(&sample, &rng)
            case .photoMetricDistortion(let t): t.apply(&sample, &rng)
            }
        }
        sample.materialize()
        return sample
    }

    // MARK: Config

    /// Reads mmseg pipeline entries. Known types: RandomResize, Resize, RandomCrop, RandomFlip,
    /// PhotoMetricDistortion, and the preprocessing entries Normalize (mean, std; to_rgb is accepted and moot, images
    /// are decoded as RGB) and Pad (size, pad_val, seg_pad_val); LoadImageFromFile, LoadAnnotations and
    /// PackSegInputs are accepted and do nothing (loading is implicit). `mean`/`std` are the config's `data.mean`
    /// and `data.std`. Without a Pad entry, batches are padded to the RandomCrop size. Unknown types and keys are
    /// errors.
    public init(config: [[String: Any]], mean: [Double]? = nil, std: [Double]? = nil) throws {
        var transforms: [Transform] = []
        var normalization = Normalization()
        for (name, values) in [("mean", mean), ("std", std)] {
            if let values, values.count != 3 || (name == "std" && values.contains { $0 <= 0 }) {
                throw DataConfigError("data.\(name) must be three \(name == "std" ? "positive " : "")numbers (R, G, B), got \(values)")
            }
        }
        if let mean { normalization.mean = mean.map(Float.init) }
        if let std { normalization.std = std.map(Float.init) }
        var padSize: (height: Int, width: Int)?
        var explicitPad = false
        var padValue: Float = 0, labelPadValue: UInt8 = 255
        // The largest (height, width) the last resize can produce: a crop beyond it in either side is always padding.
        var largestResized: (height: Double, width: Double)?
        func resizeBound(scale: (Int, Int), keepRatio: Bool, largestRatio: Double) -> (height: Double, width: Double) {
            // keep_ratio fits the image's long side to the scale's long side, in either orientation.
            let longSide = Double(max(scale.0, scale.1)) * largestRatio
            return keepRatio ? (longSide, longSide) : (Double(scale.1) * largestRatio, Double(scale.0) * largestRatio)
        }
        for (position, entry) in config.enumerated() {
            guard let type = entry["type"] as? String else {
                throw DataConfigError("pipeline entry \(position) has no 'type'")
            }
            let reader = EntryReader(type: type, position: position, entry: entry)
            switch type {
            case "RandomResize":
                try reader.allow(["scale", "ratio_range", "keep_ratio"])
                let scale = try reader.pair("scale", required: true)!
                let ratio = try reader.doublePair("ratio_range") ?? (0.5, 2.0)
                guard ratio.0 > 0, Double(max(scale.0, scale.1)) * ratio.1 <= Double(Pipeline.maximumSide) else {
                    throw DataConfigError(reader.context + ": 'ratio_range' \(ratio) must be > 0 and keep scale × ratio "
                                          + "within \(Pipeline.maximumSide) pixels")
                }
                let keepRatio = try reader.bool("keep_ratio") ?? true
                transforms.append(.randomResize(RandomResize(
                    scale: (scale.0, scale.1), ratioRange: try reader.range(ratio, "ratio_range"), keepRatio: keepRatio)))
                largestResized = resizeBound(scale: scale, keepRatio: keepRatio, largestRatio: ratio.1)
            case "Resize":
                try reader.allow(["scale", "keep_ratio"])
                let scale = try reader.pair("scale", required: true)!
                let keepRatio = try reader.bool("keep_ratio") ?? true
                transforms.append(.resize(Resize(scale: (scale.0, scale.1), keepRatio: keepRatio)))
                largestResized = resizeBound(scale: scale, keepRatio: keepRatio, largestRatio: 1)
            case "RandomCrop":
                try reader.allow(["crop_size", "cat_max_ratio", "ignore_index"])
                let size = try reader.pair("crop_size", required: true)!
                if let largest = largestResized, Double(size.0) > largest.height.rounded() || Double(size.1) > largest.width.rounded() {
                    throw DataConfigError(reader.context + ": 'crop_size' [\(size.0), \(size.1)] is larger than any image the "
                                          + "resize before it produces (at most \(Int(largest.height.rounded()))×"
                                          + "\(Int(largest.width.rounded())) pixels, height × width), so every crop would be padded")
                }
                let crop = RandomCrop(cropSize: (size.0, size.1),
                                      catMaxRatio: try reader.double("cat_max_ratio", in: 0...1) ?? 1.0,
                                      ignoreIndex: UInt8(try reader.int("ignore_index", in: 0...255) ?? 255))
                transforms.append(.randomCrop(crop))
                if !explicitPad { padSize = (size.0, size.1) }
            case "RandomFlip":
                try reader.allow(["prob", "direction"])
                if let direction = entry["direction"], direction as? String != "horizontal" {
                    throw DataConfigError(reader.context + ": only direction 'horizontal' is supported, got \(direction)")
                }
                transforms.append(.randomFlip(RandomFlip(prob: try reader.double("prob", in: 0...1) ?? 0.5)))
            case "PhotoMetricDistortion":
                try reader.allow(["brightness_delta", "contrast_range", "saturation_range", "hue_delta"])
                let defaults = PhotoMetricDistortion()
                transforms.append(.photoMetricDistortion(PhotoMetricDistortion(
                    brightnessDelta: try reader.double("brightness_delta", in: 0...255) ?? defaults.brightnessDelta,
                    contrastRange: try reader.doublePair("contrast_range").map { try reader.range($0, "contrast_range") }
                        ?? defaults.contrastRange,
                    saturationRange: try reader.doublePair("saturation_range").map { try reader.range($0, "saturation_range") }
                        ?? defaults.saturationRange,
                    hueDelta: try reader.int("hue_delta", in: 0...180) ?? defaults.hueDelta)))
            case "Normalize":
                try reader.allow(["mean", "std", "to_rgb"])
                if let values = try reader.triple("mean") { normalization.mean = values }
                if let values = try reader.triple("std") {
                    guard values.allSatisfy({ $0 > 0 }) else { throw DataConfigError(reader.context + ": 'std' must be positive") }
                    normalization.std = values
                }
            case "Pad":
                try reader.allow(["size", "pad_val", "seg_pad_val"])
                if let size = try reader.pair("size") { padSize = (size.0, size.1) }
                explicitPad = true
                padValue = Float(try reader.double("pad_val", in: -1e6...1e6) ?? 0)
                labelPadValue = UInt8(try reader.int("seg_pad_val", in: 0...255) ?? 255)
            case "LoadImageFromFile", "LoadAnnotations", "PackSegInputs":
                continue
            default:
                throw DataConfigError("pipeline entry \(position): unknown transform type '\(type)'")
            }
        }
        self.init(transforms: transforms, normalization: normalization, padSize: padSize, padValue: padValue,
                  labelPadValue: labelPadValue)
    }
}

/// Typed access to one pipeline dictionary, with errors that name the entry and the key.
private struct EntryReader {
    let type: String, position: Int, entry: [String: Any]

    var context: String { "pipeline entry \(position) (\(type))" }

    func allow(_ keys: Set<String>) throws {
        for key in entry.keys where key != "type" && !keys.contains(key) {
            throw DataConfigError("\(context): unknown key '\(key)' (known: \(keys.sorted().joined(separator: ", ")))")
        }
    }

    private func number(_ value: Any) -> Double? {
        switch value {
        case let v as Int: Double(v)
        case let v as Double: v
        case let v as Float: Double(v)
        default: nil
        }
    }

    func double(_ key: String) throws -> Double? {
        guard let value = entry[key] else { return nil }
        guard let v = number(value), v.isFinite else {
            throw DataConfigError("\(context): '\(key)' must be a finite number, got \(value)")
        }
        return v
    }

    /// A number within `range`, naming the key otherwise.
    func double(_ key: String, in range: ClosedRange<Double>) throws -> Double? {
        guard let value = try double(key) else { return nil }
        guard range.contains(value) else {
            throw DataConfigError("\(context): '\(key)' must be in \(range), got \(value)")
        }
        return value
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let value = try double(key) else { return nil }
        // Compared as doubles first: converting 1e308 to Int would trap.
        guard value == value.rounded(), value >= Double(range.lowerBound), value <= Double(range.upperBound) else {
            throw DataConfigError("\(context): '\(key)' must be an integer in \(range), got \(value)")
        }
        return Int(value)
    }

    func bool(_ key: String) throws -> Bool? {
        guard let value = entry[key] else { return nil }
        guard let v = value as? Bool else { throw DataConfigError("\(context): '\(key)' must be true or false") }
        return v
    }

    private func numbers(_ key: String, count: Int) throws -> [Double]? {
        guard let value = entry[key] else { return nil }
        guard let list = value as? [Any], list.count == count, case let values = list.compactMap(number),
              values.count == count else {
            throw DataConfigError("\(context): '\(key)' must be a list of \(count) numbers, got \(value)")
        }
        return values
    }

    /// Two integers in 1…maximumSide, e.g. scale [w, h] or crop_size [h, w].
    func pair(_ key: String, required: Bool = false) throws -> (Int, Int)? {
        guard let values = try numbers(key, count: 2) else {
            if required { throw DataConfigError("\(context): '\(key)' is required") }
            return nil
        }
        guard values.allSatisfy({ $0 >= 1 && $0 <= Double(Pipeline.maximumSide) && $0 == $0.rounded() }) else {
            throw DataConfigError("\(context): '\(key)' must be two integers in 1…\(Pipeline.maximumSide), got \(values)")
        }
        return (Int(values[0]), Int(values[1]))
    }

    /// Two finite numbers ≥ 0 (ratio, contrast and saturation ranges).
    func doublePair(_ key: String) throws -> (Double, Double)? {
        guard let values = try numbers(key, count: 2) else { return nil }
        guard values.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw DataConfigError("\(context): '\(key)' must be two finite numbers ≥ 0, got \(values)")
        }
        return (values[0], values[1])
    }

    func triple(_ key: String) throws -> [Float]? {
        guard let values = try numbers(key, count: 3) else { return nil }
        guard values.allSatisfy({ abs($0) <= 1e6 }) else {
            throw DataConfigError("\(context): '\(key)' must be three finite numbers, got \(values)")
        }
        return values.map(Float.init)
    }

    func range(_ pair: (Double, Double), _ key: String) throws -> ClosedRange<Double> {
        guard pair.0 <= pair.1 else { throw DataConfigError("\(context): '\(key)' must be [low, high], got \(pair)") }
        return pair.0...pair.1
    }
}

/// mmseg's test-time augmentation (`tta_pipeline`: TestTimeAug over Resize(scale_factor=r, keep_ratio=True) for each
/// ratio and RandomFlip(prob=0 / 1)): every (ratio, flip) view of the decoded image, in mmseg's order (ratios outer,
/// flips inner). mmseg's tta_pipeline has no base Resize, so views scale the image as decoded; the sizes follow
/// mmcv (scale = ⌊w·r + ½⌋ × ⌊h·r + ½⌋, then the keep-ratio fit of the image to it) and the pixels cv2's bilinear.
public struct TestTimeAugmentation: Equatable, Sendable {
    public var ratios: [Double]
    public var flips: [Bool]

    public init(ratios: [Double], flips: [Bool]) {
        self.ratios = ratios
        self.flips = flips
    }

    /// One view: 3×h×w normalised, and whether it is mirrored (its logits are mirrored back).
    public struct View {
        public let image: Tensor
        public let flipped: Bool
    }

    public func views(of image: PixelImage, normalization: Normalization) -> [View] {
        ratios.flatMap { ratio -> [View] in
            let scale = (width: Int(Double(image.width) * ratio + 0.5), height: Int(Double(image.height) * ratio + 0.5))
            let size = rescaledSize(width: image.width, height: image.height, toFit: scale)
            let resized = size.width == image.width && size.height == image.height ? image
                : resizeBilinear(image, ResizeWindow(targetWidth: size.width, targetHeight: size.height))
            return flips.map { flip in
                var sample = AugmentedSample(image: resized, label: nil)
                if flip { sample.flipHorizontally() }
                return View(image: normalization.planes(sample.image), flipped: flip)
            }
        }
    }
}
