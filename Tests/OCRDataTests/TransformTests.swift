import Foundation
import OCRData
import OCRTensor
import OCRTestSupport
import XCTest

/// A label map of `block`×`block` squares of random classes 0…18 and an image painting each class in its
/// Cityscapes colour, so after any geometric transform the image says which label each pixel must have.
func blockSample(width: Int, height: Int, block: Int, seed: UInt64) -> AugmentedSample {
    var rng = SplitMix64(seed: seed)
    let blocksX = (width + block - 1) / block, blocksY = (height + block - 1) / block
    let classes = (0..<blocksX * blocksY).map { _ in UInt8(rng.next() % 19) }
    var label = LabelImage(width: width, height: height, filledWith: 0)
    var image = PixelImage(width: width, height: height, channels: 3)
    for y in 0..<height {
        for x in 0..<width {
            let c = classes[(y / block) * blocksX + x / block]
            label.values[y * width + x] = c
            for k in 0..<3 { image.pixels[(y * width + x) * 3 + k] = ClassInfo.cityscapes.palette[Int(c)][k] }
        }
    }
    return AugmentedSample(image: image, label: label)
}

let trainTransforms: [Transform] = [
    .randomResize(RandomResize(scale: (96, 48), ratioRange: 0.5...2.0)),
    .randomCrop(RandomCrop(cropSize: (32, 48), catMaxRatio: 0.75)),
    .randomFlip(RandomFlip(prob: 0.5)),
    .photoMetricDistortion(PhotoMetricDistortion()),
]

final class TransformTests: XCTestCase {
    func testSameSeedEpochAndIndexGiveTheSameAugmentation() {
        let pipeline = Pipeline(transforms: trainTransforms)
        let input = blockSample(width: 80, height: 40, block: 6, seed: 1)
        let a = pipeline.apply(input, seed: 3, epoch: 2, sampleIndex: 17)
        let b = pipeline.apply(input, seed: 3, epoch: 2, sampleIndex: 17)
        XCTAssertEqual(a.image, b.image)
        XCTAssertEqual(a.label, b.label)
        // Changing any one key changes the draws (checked over a few keys so a coincidence cannot pass).
        for (seed, epoch, index) in [(4, 2, 17), (3, 3, 17), (3, 2, 18)] {
            let c = pipeline.apply(input, seed: UInt64(seed), epoch: epoch, sampleIndex: index)
            XCTAssertTrue(c.image != a.image || c.label != a.label, "keys \(seed), \(epoch), \(index) repeat the draws")
        }
    }

    /// Under resize, crop and flip each label pixel stays on its image pixel: wherever the 5×5 label
    /// neighbourhood is one class, the image shows that class's colour. (mmseg resizes labels with cv2's
    /// INTER_NEAREST, source ⌊x·scale⌋, which lags the half-pixel-centred image by up to half a source pixel: one
    /// output pixel at ratio 2, next to the image's one-pixel bilinear blend at a block edge.)
    func testLabelsMoveWithTheirImagePixels() {
        let geometric = Pipeline(transforms: Array(trainTransforms.prefix(3)))
        var flips = 0
        for index in 0..<24 {
            let input = blockSample(width: 96, height: 64, block: 16, seed: UInt64(index))
            let out = geometric.apply(input, seed: 11, epoch: 0, sampleIndex: index)
            let label = out.label!, image = out.image
            XCTAssertEqual([label.width, label.height], [image.width, image.height])
            var checked = 0, misplaced = 0
            for y in 2..<(label.height - 2) {
                for x in 2..<(label.width - 2) {
                    let c = label.values[y * label.width + x]
                    let uniform = (-2...2).allSatisfy { dy in (-2...2).allSatisfy { dx in
                        label.values[(y + dy) * label.width + x + dx] == c } }
                    guard uniform else { continue }
                    checked += 1
                    let colour = ClassInfo.cityscapes.palette[Int(c)]
                    if (0..<3).contains(where: { abs(Int(image.pixels[(y * image.width + x) * 3 + $0]) - Int(colour[$0])) > 2 }) {
                        misplaced += 1
                    }
                }
            }
            XCTAssertGreaterThan(checked, label.values.count / 10, "too few pixels inside blocks to check")
            XCTAssertEqual(misplaced, 0, "sample \(index): \(misplaced) of \(checked) label pixels off their image pixels")
            var rng = SplitMix64(seed: 11, 0, UInt64(index), 2)
            if rng.uniform() < 0.5 { flips += 1 }
        }
        XCTAssertTrue(flips > 0 && flips < 24, "the draws should flip some samples and not others (\(flips) of 24)")
    }

    func testFlipMirrorsImageAndLabel() {
        let input = blockSample(width: 21, height: 5, block: 2, seed: 4)
        let out = Pipeline(transforms: [.randomFlip(RandomFlip(prob: 1))]).apply(input, seed: 0, epoch: 0, sampleIndex: 0)
        for y in 0..<5 {
            for x in 0..<21 {
                XCTAssertEqual(out.label!.values[y * 21 + x], input.label!.values[y * 21 + 20 - x])
                XCTAssertEqual(out.image.pixels[(y * 21 + x) * 3 + 1], input.image.pixels[(y * 21 + 20 - x) * 3 + 1])
            }
        }
        let kept = Pipeline(transforms: [.randomFlip(RandomFlip(prob: 0))]).apply(input, seed: 0, epoch: 0, sampleIndex: 0)
        XCTAssertEqual(kept.image, input.image)
    }

    /// RandomResize followed by RandomCrop resamples only the crop window; it must equal resizing everything
    /// and then cropping.
    func testWindowedResizeEqualsResizeThenCrop() {
        var rng = SplitMix64(seed: 9)
        let image = PixelImage(width: 37, height: 23, channels: 3, pixels: (0..<37 * 23 * 3).map { _ in UInt8(rng.next() & 255) })
        let label = LabelImage(width: 37, height: 23, values: (0..<37 * 23).map { _ in UInt8(rng.next() % 19) })
        for (targetW, targetH) in [(80, 50), (19, 11), (37, 23)] {
            let full = resizeBilinear(image, ResizeWindow(targetWidth: targetW, targetHeight: targetH))
            let fullLabel = resizeNearest(label, ResizeWindow(targetWidth: targetW, targetHeight: targetH))
            let window = ResizeWindow(targetWidth: targetW, targetHeight: targetH, x0: 3, y0: 2,
                                      width: targetW / 2, height: targetH / 2)
            let part = resizeBilinear(image, window), partLabel = resizeNearest(label, window)
            for y in 0..<window.height {
                for x in 0..<window.width {
                    let p = (y + 2) * targetW + x + 3
                    XCTAssertEqual(partLabel.values[y * window.width + x], fullLabel.values[p])
                    for c in 0..<3 { XCTAssertEqual(part.pixels[(y * window.width + x) * 3 + c], full.pixels[p * 3 + c]) }
                }
            }
        }
    }

    func testResizeFollowsMMCVKeepRatioAndInterpolatesLinearly() {
        XCTAssertTrue(rescaledSize(width: 2048, height: 1024, toFit: (1024, 512)) == (1024, 512))
        XCTAssertTrue(rescaledSize(width: 500, height: 375, toFit: (2048, 512)) == (683, 512))
        // Long side to the long side of the scale, whatever the orientation: a portrait image stays 1024×2048.
        XCTAssertTrue(rescaledSize(width: 1024, height: 2048, toFit: (2048, 1024)) == (1024, 2048))
        XCTAssertTrue(rescaledSize(width: 300, height: 600, toFit: (2048, 512)) == (512, 1024))
        // A horizontal ramp 0, 4, 8, … resized ×2 stays a ramp: interior output pixel x sits at source (x+0.5)/2−0.5.
        let ramp = PixelImage(width: 16, height: 2, channels: 3, pixels: (0..<32).flatMap { p in
            [UInt8]((0..<3).map { _ in UInt8((p % 16) * 4) }) })
        let doubled = resizeBilinear(ramp, ResizeWindow(targetWidth: 32, targetHeight: 4))
        for x in 1..<31 {
            let want = (Double(x) + 0.5) / 2 - 0.5
            XCTAssertEqual(Double(doubled.pixels[(32 + x) * 3]), want * 4, accuracy: 0.51, "x = \(x)")
        }
        // RandomResize's output size is the keep-ratio fit of scale·ratio.
        let input = blockSample(width: 200, height: 100, block: 10, seed: 2)
        let resize = RandomResize(scale: (400, 100), ratioRange: 1.5...1.5)
        let out = Pipeline(transforms: [.randomResize(resize)]).apply(input, seed: 0, epoch: 0, sampleIndex: 0)
        XCTAssertEqual([out.width, out.height, out.label!.width, out.label!.height], [300, 150, 300, 150])
    }

    func testCatMaxRatioIsHonoured() {
        // Columns 0..<24 class 1, the rest class 0: a 24-wide crop at x ∈ [0, 40] is balanced only for x in
        // 7...17 (class 1 between 25 % and 75 %), about a quarter of the draws.
        var label = LabelImage(width: 64, height: 64, filledWith: 0)
        for y in 0..<64 { for x in 0..<24 { label.values[y * 64 + x] = 1 } }
        let input = AugmentedSample(image: PixelImage(width: 64, height: 64, channels: 3), label: label)
        func balancedShare(_ ratio: Double) -> Double {
            let crop = RandomCrop(cropSize: (24, 24), catMaxRatio: ratio)
            let pipeline = Pipeline(transforms: [.randomCrop(crop)])
            let checker = RandomCrop(cropSize: (24, 24), catMaxRatio: 0.75)
            let balanced = (0..<200).filter { index in
                let out = pipeline.apply(input, seed: 5, epoch: 0, sampleIndex: index)
                XCTAssertEqual([out.width, out.height], [24, 24])
                return checker.isBalanced(out.label!)
            }
            return Double(balanced.count) / 200
        }
        let unchecked = balancedShare(1.0), checked = balancedShare(0.75)
        XCTAssertLessThan(unchecked, 0.5, "most unchecked crops should be one class")
        // Eleven draws each balanced with p ≈ 0.27 fail together with p ≈ 0.03.
        XCTAssertGreaterThan(checked, 0.9, "with cat_max_ratio 0.75 nearly every crop should be balanced (\(checked))")
        // Ignore pixels do not count as a class, and a single-class crop is never balanced.
        let checker = RandomCrop(cropSize: (2, 2), catMaxRatio: 0.75)
        XCTAssertFalse(checker.isBalanced(LabelImage(width: 2, height: 2, values: [3, 3, 255, 255])))
        XCTAssertTrue(checker.isBalanced(LabelImage(width: 2, height: 2, values: [3, 4, 255, 255])))
        XCTAssertFalse(checker.isBalanced(LabelImage(width: 2, height: 2, values: [3, 3, 3, 4])))
        // A hopeless image (one class) still yields a crop after the 10 redraws.
        let flat = AugmentedSample(image: PixelImage(width: 30, height: 30, channels: 3),
                                   label: LabelImage(width: 30, height: 30, filledWith: 2))
        let out = Pipeline(transforms: [.randomCrop(RandomCrop(cropSize: (8, 9), catMaxRatio: 0.75))])
            .apply(flat, seed: 0, epoch: 0, sampleIndex: 0)
        XCTAssertEqual([out.height, out.width], [8, 9])
    }

    func testPhotometricDrawsStayInTheirRanges() {
        let distortion = PhotoMetricDistortion()
        var present = [0, 0, 0, 0], contrastFirst = 0
        for i in 0..<2000 {
            var rng = SplitMix64(seed: 1, UInt64(i))
            let d = distortion.draw(&rng)
            if let b = d.brightness { present[0] += 1; XCTAssertTrue((-32...32).contains(b)) }
            if let c = d.contrast { present[1] += 1; XCTAssertTrue((0.5...1.5).contains(c)) }
            if let s = d.saturation { present[2] += 1; XCTAssertTrue((0.5...1.5).contains(s)) }
            if let h = d.hue { present[3] += 1; XCTAssertTrue((-18...18).contains(h)) }
            if d.contrastFirst { contrastFirst += 1 }
        }
        for count in present + [contrastFirst] { XCTAssertTrue((900...1100).contains(count), "p = ½ expected: \(present)") }
    }

    func testPhotometricStepsDoWhatTheySay() {
        func image(_ rgb: [UInt8]) -> PixelImage { PixelImage(width: 1, height: 1, channels: 3, pixels: rgb) }
        func apply(_ rgb: [UInt8], _ draws: PhotoMetricDistortion.Draws) -> [UInt8] {
            var img = image(rgb)
            PhotoMetricDistortion.distort(&img, draws)
            return img.pixels
        }
        let none = PhotoMetricDistortion.Draws(brightness: nil, contrast: nil, contrastFirst: true, saturation: nil, hue: nil)
        XCTAssertEqual(apply([10, 128, 250], none), [10, 128, 250])
        var brighter = none
        brighter.brightness = 20.7
        XCTAssertEqual(apply([10, 128, 250], brighter), [30, 148, 255]) // + β, truncated, clipped
        var contrast = none
        contrast.contrast = 1.5
        XCTAssertEqual(apply([10, 128, 250], contrast), [15, 192, 255])
        contrast.contrastFirst = false
        contrast.brightness = -20
        XCTAssertEqual(apply([10, 128, 250], contrast), [0, 162, 255]) // brightness first, then contrast
        // Hue leaves gray alone; saturation 0.5 halves the spread around V and keeps V.
        var hue = none
        hue.hue = 18
        XCTAssertEqual(apply([90, 90, 90], hue), [90, 90, 90])
        XCTAssertNotEqual(apply([200, 40, 40], hue), [200, 40, 40])
        var desaturate = none
        desaturate.saturation = 0.5
        let pale = apply([200, 40, 40], desaturate)
        XCTAssertEqual(Int(pale[0]), 200, accuracy: 1)
        XCTAssertEqual(Int(pale[1]), 120, accuracy: 2)
        // The uint8 HSV round trip alone is within OpenCV's quantisation (2° of hue).
        var rng = SplitMix64(seed: 3)
        for _ in 0..<2000 {
            let r = UInt8(rng.next() & 255), g = UInt8(rng.next() & 255), b = UInt8(rng.next() & 255)
            let (h, s, v) = rgbToHSV(r, g, b)
            let back = hsvToRGB(h, s, v)
            XCTAssertLessThanOrEqual(max(abs(Int(back.0) - Int(r)), abs(Int(back.1) - Int(g)), abs(Int(back.2) - Int(b))), 5)
        }
        // Labels are untouched by the photometric step.
        let input = blockSample(width: 20, height: 10, block: 3, seed: 8)
        let out = Pipeline(transforms: [.photoMetricDistortion(PhotoMetricDistortion())]).apply(input, seed: 1, epoch: 0, sampleIndex: 0)
        XCTAssertEqual(out.label, input.label)
    }

    func testPipelineConfigReadsMMSegEntries() throws {
        let config: [[String: Any]] = [
            ["type": "LoadImageFromFile"], ["type": "LoadAnnotations"],
            ["type": "RandomResize", "scale": [2048, 1024], "ratio_range": [0.5, 2.0], "keep_ratio": true],
            ["type": "RandomCrop", "crop_size": [512, 1024], "cat_max_ratio": 0.75],
            ["type": "RandomFlip", "prob": 0.5],
            ["type": "PhotoMetricDistortion"],
            ["type": "PackSegInputs"],
        ]
        let pipeline = try Pipeline(config: config)
        XCTAssertEqual(pipeline.transforms, [
            .randomResize(RandomResize(scale: (2048, 1024), ratioRange: 0.5...2.0)),
            .randomCrop(RandomCrop(cropSize: (512, 1024), catMaxRatio: 0.75)),
            .randomFlip(RandomFlip(prob: 0.5)),
            .photoMetricDistortion(PhotoMetricDistortion()),
        ])
        XCTAssertEqual(pipeline.padSize?.height, 512)
        XCTAssertEqual(pipeline.padSize?.width, 1024)
        XCTAssertEqual(pipeline.normalization, Normalization())
        XCTAssertTrue(try Pipeline(config: []).transforms.isEmpty)

        func failure(_ entries: [[String: Any]]) -> String {
            do { _ = try Pipeline(config: entries); return "no error" } catch { return "\(error)" }
        }
        XCTAssertTrue(failure([["type": "RandomRotate"]]).contains("unknown transform type 'RandomRotate'"))
        XCTAssertTrue(failure([["type": "RandomFlip", "probability": 0.5]]).contains("unknown key 'probability'"))
        XCTAssertTrue(failure([["type": "RandomCrop"]]).contains("'crop_size' is required"))
        XCTAssertTrue(failure([["type": "RandomResize", "scale": [2048]]]).contains("'scale' must be a list of 2 numbers"))
        XCTAssertTrue(failure([["type": "Normalize", "std": [1, 0, 1]]]).contains("'std' must be positive"))
        XCTAssertThrowsError(try Pipeline(config: [], mean: [1, 2]))
        let custom = try Pipeline(config: [["type": "Normalize", "mean": [1, 2, 3], "std": [4, 5, 6], "to_rgb": true]])
        XCTAssertEqual(custom.normalization, Normalization(mean: [1, 2, 3], std: [4, 5, 6]))
    }
}

/// The resize of mmseg's pipelines against mmseg's own `Resize` (mmcv's cv2 backend: INTER_LINEAR on uint8 images,
/// INTER_NEAREST on labels; Tests/Fixtures/mmseg/resize.safetensors): sizes, every pixel and every label, bit for bit.
final class MMSegResizeTests: XCTestCase {
    func testResizeEqualsOpenCVAsMMSegCallsIt() throws {
        let f = try Fixtures.file("mmseg/resize.safetensors")
        let cases = f.metadata.keys.filter { $0 != "versions" }.sorted()
        XCTAssertEqual(cases.count, 8)
        for name in cases {
            let scale = (try JSONSerialization.jsonObject(with: Data(f.metadata[name]!.utf8)) as! [String: [Int]])["scale"]!
            func bytes(_ key: String) throws -> (shape: [Int], values: [UInt8]) {
                let entry = try f.entry("\(name).\(key)")
                XCTAssertEqual(entry.dtype, .u8)
                return (entry.shape, Array(entry.bytes))
            }
            let (imageShape, imagePixels) = try bytes("image")
            let (_, labelValues) = try bytes("label")
            let (outShape, want) = try bytes("resized_image")
            let (_, wantLabel) = try bytes("resized_label")
            let (h, w) = (imageShape[0], imageShape[1])
            let size = rescaledSize(width: w, height: h, toFit: (scale[0], scale[1]))
            XCTAssertEqual([size.height, size.width], [outShape[0], outShape[1]], "\(name): keep-ratio size")
            let window = ResizeWindow(targetWidth: size.width, targetHeight: size.height)
            let image = resizeBilinear(PixelImage(width: w, height: h, channels: 3, pixels: imagePixels), window)
            let label = resizeNearest(LabelImage(width: w, height: h, values: labelValues), window)
            let differing = zip(image.pixels, want).filter { $0 != $1 }.count
            XCTAssertEqual(differing, 0, "\(name): \(differing) of \(want.count) image values differ from cv2")
            XCTAssertEqual(label.values, wantLabel, "\(name): labels differ from cv2 INTER_NEAREST")
        }
    }
}
