import Foundation
import OCRTensor

/// The built-in dataset (docs/DATA.md "The synthetic dataset"): small street scenes in the Cityscapes layout, fully
/// determined by (seed, split, index).
///
/// A scene: sky over textured ground; buildings with grids of windows; trees; cars (body, cabin, wheels) with
/// windows; people. Far objects are drawn first, so nearer ones occlude them; every pixel gets Gaussian noise.
/// Building windows and car windows are drawn from the *same* colour, size and texture distribution: a pixel
/// alone cannot tell them apart, only what surrounds it (a wall or a car body) can — the object context OCRNet
/// adds. Colours of objects vary per instance, so the task needs learning.
public enum SyntheticDataset {
    public static let height = 128
    public static let width = 256
    /// The sizes `make-synthetic` and the quick start write when not told otherwise.
    public static let defaultTrainCount = 500
    public static let defaultValCount = 100

    public static let classes = ClassInfo(
        names: ["ground", "sky", "building", "tree", "car", "person", "building window", "car window"],
        palette: [[128, 64, 128], [70, 130, 180], [70, 70, 70], [107, 142, 35], [0, 0, 142], [220, 20, 60],
                  [250, 170, 30], [0, 255, 255]])

    enum Label: UInt8 {
        case ground = 0, sky, building, tree, car, person, buildingWindow, carWindow
    }

    /// Scene `index` of `split` ("train" or "val"): image 128×256×3 and its label map.
    public static func render(seed: UInt64, split: String, index: Int) -> (image: PixelImage, label: LabelImage) {
        var rng = SplitMix64(seed: seed, split == "train" ? 0 : 1, UInt64(index))
        var canvas = Canvas(width: width, height: height)
        let horizon = Int(Double(height) * rng.range(0.38, 0.55))
        paintBackground(&canvas, horizon: horizon, &rng)
        for _ in 0..<rng.int(1...4) { paintBuilding(&canvas, horizon: horizon, &rng) }
        for _ in 0..<rng.int(0...3) { paintTree(&canvas, horizon: horizon, &rng) }
        // Cars and people in depth order: a larger bottom y is nearer and is painted later, on top.
        var actors: [(bottom: Int, isCar: Bool)] = []
        for _ in 0..<rng.int(1...3) { actors.append((rng.int((horizon + 12)...(height + 10)), true)) }
        for _ in 0..<rng.int(0...3) { actors.append((rng.int((horizon + 8)...(height + 4)), false)) }
        for actor in actors.sorted(by: { $0.bottom < $1.bottom }) {
            if actor.isCar {
                paintCar(&canvas, horizon: horizon, bottom: actor.bottom, &rng)
            } else {
                paintPerson(&canvas, horizon: horizon, bottom: actor.bottom, &rng)
            }
        }
        return canvas.finished(noise: 6, &rng)
    }

    /// Writes `train` + `val` scenes under `root` as `leftImg8bit/<split>/synth/*_leftImg8bit.png` and
    /// `gtFine/<split>/synth/*_gtFine_labelTrainIds.png`. Refuses a root that already holds either directory
    /// (nothing earlier is overwritten); the dataset is built in a staging directory and moved into place, so an
    /// interrupted run never leaves a partial dataset that looks complete.
    public static func write(to root: String, train: Int, val: Int, seed: UInt64) throws {
        let files = FileManager.default
        for existing in ["leftImg8bit", "gtFine"] where files.fileExists(atPath: "\(root)/\(existing)") {
            throw DataError(root, "already holds \(existing)/: refusing to overwrite a dataset (choose another directory)")
        }
        let staging = "\(root)/.make-synthetic-\(ProcessInfo.processInfo.processIdentifier)"
        do {
            try files.createDirectory(atPath: staging, withIntermediateDirectories: true)
            for split in ["train", "val"] {
                for top in ["leftImg8bit", "gtFine"] {
                    try files.createDirectory(atPath: "\(staging)/\(top)/\(split)/synth", withIntermediateDirectories: true)
                }
            }
        } catch {
            throw DataError(root, "cannot create the dataset directories: \(error.localizedDescription)")
        }
        let jobs = (0..<train).map { ("train", $0) } + (0..<val).map { ("val", $0) }
        let lock = NSLock()
        var firstError: Error?
        DispatchQueue.concurrentPerform(iterations: jobs.count) { j in
            let (split, index) = jobs[j]
            let (image, label) = render(seed: seed, split: split, index: index)
            let stem = String(format: "synth_%06d_000019", index)
            do {
                try ImageCodec.writeRGB(image, to: "\(staging)/leftImg8bit/\(split)/synth/\(stem)_leftImg8bit.png")
                try ImageCodec.writeLabel(label, to: "\(staging)/gtFine/\(split)/synth/\(stem)_gtFine_labelTrainIds.png")
            } catch {
                lock.lock()
                if firstError == nil { firstError = error }
                lock.unlock()
            }
        }
        if let firstError { throw firstError }
        do {
            for top in ["leftImg8bit", "gtFine"] { try files.moveItem(atPath: "\(staging)/\(top)", toPath: "\(root)/\(top)") }
            try files.removeItem(atPath: staging)
        } catch {
            throw DataError(root, "cannot move the generated dataset into place: \(error.localizedDescription)")
        }
    }

    // MARK: Scene elements

    private static func paintBackground(_ canvas: inout Canvas, horizon: Int, _ rng: inout SplitMix64) {
        let sky = [rng.range(80, 140), rng.range(140, 190), rng.range(200, 245)]
        let ground = [rng.range(90, 130), rng.range(80, 115), rng.range(70, 110)]
        let stripe = rng.range(0.15, 0.4)
        canvas.fill(x0: 0, y0: 0, x1: canvas.width, y1: horizon, label: .sky) { _, y in
            let lift = 25 * Double(y) / Double(max(horizon, 1))
            return [sky[0] + lift, sky[1] + lift, sky[2] + lift * 0.4]
        }
        canvas.fill(x0: 0, y0: horizon, x1: canvas.width, y1: canvas.height, label: .ground) { x, y in
            let texture = 10 * sin(Double(x) * stripe + Double(y) * 0.9) * sin(Double(y) * 0.5)
            return ground.map { $0 + texture }
        }
    }

    private static func paintBuilding(_ canvas: inout Canvas, horizon: Int, _ rng: inout SplitMix64) {
        let buildingWidth = rng.int(34...90)
        let x0 = rng.int(-20...(canvas.width - 14))
        let bottom = horizon + rng.int(0...6)
        let top = max(rng.int(2...max(horizon - 26, 3)), 0)
        let wall = [rng.range(90, 170), rng.range(80, 150), rng.range(70, 140)]
        canvas.fill(x0: x0, y0: top, x1: x0 + buildingWidth, y1: bottom, label: .building) { _, y in
            let mortar = y % 4 == 0 ? -18.0 : 0
            return wall.map { $0 + mortar }
        }
        // A grid of windows, each surrounded by wall.
        let windowWidth = rng.int(6...16), windowHeight = rng.int(5...11)
        let gapX = rng.int(4...8), gapY = rng.int(4...8)
        var y = top + gapY
        while y + windowHeight <= bottom - 6 {
            var x = x0 + gapX
            while x + windowWidth <= x0 + buildingWidth - gapX {
                paintWindow(&canvas, x0: x, y0: y, width: windowWidth, height: windowHeight, label: .buildingWindow, &rng)
                x += windowWidth + gapX
            }
            y += windowHeight + gapY
        }
    }

    /// Building and car windows alike: dark blue-grey glass with a lighter diagonal reflection.
    private static func paintWindow(_ canvas: inout Canvas, x0: Int, y0: Int, width: Int, height: Int, label: Label,
                                    _ rng: inout SplitMix64) {
        let glass = [rng.range(50, 90), rng.range(70, 110), rng.range(105, 145)]
        let glint = rng.range(0, 1)
        canvas.fill(x0: x0, y0: y0, x1: x0 + width, y1: y0 + height, label: label) { x, y in
            let along = Double((x - x0) + (y - y0)) / Double(width + height)
            let reflection = abs(along - glint) < 0.12 ? 45.0 : 0
            return glass.map { $0 + reflection }
        }
    }

    private static func paintTree(_ canvas: inout Canvas, horizon: Int, _ rng: inout SplitMix64) {
        let cx = rng.int(0...canvas.width), base = horizon + rng.int(2...14)
        let radius = rng.int(9...20), trunkHeight = rng.int(8...16)
        let bark = [rng.range(80, 110), rng.range(55, 75), rng.range(30, 50)]
        canvas.fill(x0: cx - 2, y0: base - trunkHeight, x1: cx + 2, y1: base, label: .tree) { _, _ in bark }
        let leaves = [rng.range(40, 90), rng.range(110, 160), rng.range(30, 70)]
        let crownY = base - trunkHeight - radius + 3
        var texture = SplitMix64(seed: rng.next())
        canvas.fillEllipse(cx: cx, cy: crownY, rx: radius, ry: radius, label: .tree) { _, _ in
            let speckle = texture.range(-30, 30)
            return leaves.map { $0 + speckle }
        }
    }

    private static func paintCar(_ canvas: inout Canvas, horizon: Int, bottom: Int, _ rng: inout SplitMix64) {
        // Perspective: nearer (lower) cars are larger.
        let depth = Double(bottom - horizon) / Double(canvas.height - horizon)
        let length = Int(28 + 40 * depth * rng.range(0.8, 1.2))
        let bodyHeight = max(length * 3 / 10, 6), cabinHeight = max(length * 3 / 10, 7)
        let x0 = rng.int(-length / 2...(canvas.width - length / 2))
        let paint = [[200.0, 40, 40], [40, 70, 190], [225, 200, 50], [230, 230, 230], [40, 40, 45], [60, 150, 70]]
        let body = paint[rng.int(0...(paint.count - 1))].map { $0 + rng.range(-25, 25) }
        let bodyTop = bottom - 4 - bodyHeight
        canvas.fill(x0: x0, y0: bodyTop, x1: x0 + length, y1: bottom - 4, label: .car) { x, _ in
            let shade = x == x0 || x == x0 + length - 1 ? -30.0 : 0
            return body.map { $0 + shade }
        }
        // The cabin: a narrower block on the body, with one or two windows inside a frame of body colour.
        let cabinX0 = x0 + length / 5, cabinX1 = x0 + length - length / 6
        canvas.fill(x0: cabinX0, y0: bodyTop - cabinHeight, x1: cabinX1, y1: bodyTop, label: .car) { _, _ in body }
        let frame = 2, windowHeight = cabinHeight - 2 * frame
        let panes = rng.int(1...2)
        let innerWidth = cabinX1 - cabinX0 - frame * (panes + 1)
        for pane in 0..<panes where innerWidth >= 2 * panes {
            let paneWidth = innerWidth / panes
            paintWindow(&canvas, x0: cabinX0 + frame + pane * (paneWidth + frame), y0: bodyTop - cabinHeight + frame,
                        width: paneWidth, height: windowHeight, label: .carWindow, &rng)
        }
        let wheel = max(length / 9, 3)
        for wx in [x0 + length / 5, x0 + length - length / 5] {
            canvas.fillEllipse(cx: wx, cy: bottom - wheel, rx: wheel, ry: wheel, label: .car) { _, _ in [25, 25, 28] }
        }
    }

    private static func paintPerson(_ canvas: inout Canvas, horizon: Int, bottom: Int, _ rng: inout SplitMix64) {
        let depth = Double(bottom - horizon) / Double(canvas.height - horizon)
        let tall = Int(16 + 22 * depth * rng.range(0.85, 1.15))
        let cx = rng.int(0...canvas.width)
        let clothes = [rng.range(30, 220), rng.range(30, 220), rng.range(30, 220)]
        let skin = [rng.range(150, 230), rng.range(110, 180), rng.range(90, 150)]
        let legs = [rng.range(20, 80), rng.range(20, 80), rng.range(40, 110)]
        let legTop = bottom - tall * 4 / 10, torsoTop = bottom - tall * 8 / 10
        canvas.fill(x0: cx - tall / 10, y0: legTop, x1: cx + tall / 10 + 1, y1: bottom, label: .person) { _, _ in legs }
        canvas.fillEllipse(cx: cx, cy: (legTop + torsoTop) / 2, rx: max(tall / 7, 2), ry: (legTop - torsoTop) / 2 + 1,
                           label: .person) { _, _ in clothes }
        let head = max(tall / 10, 2)
        canvas.fillEllipse(cx: cx, cy: torsoTop - head, rx: head, ry: head, label: .person) { _, _ in skin }
    }
}

/// An RGB float canvas with its label map; shapes are clipped to the frame.
private struct Canvas {
    let width: Int, height: Int
    var rgb: [Double]
    var label: [UInt8]

    init(width: Int, height: Int) {
        self.width = width
        self.height = height
        rgb = [Double](repeating: 0, count: width * height * 3)
        label = [UInt8](repeating: 0, count: width * height)
    }

    mutating func fill(x0: Int, y0: Int, x1: Int, y1: Int, label value: SyntheticDataset.Label,
                       colour: (Int, Int) -> [Double]) {
        for y in max(y0, 0)..<max(min(y1, height), max(y0, 0)) {
            for x in max(x0, 0)..<max(min(x1, width), max(x0, 0)) { set(x, y, value, colour(x, y)) }
        }
    }

    mutating func fillEllipse(cx: Int, cy: Int, rx: Int, ry: Int, label value: SyntheticDataset.Label,
                              colour: (Int, Int) -> [Double]) {
        for y in max(cy - ry, 0)..<max(min(cy + ry + 1, height), max(cy - ry, 0)) {
            for x in max(cx - rx, 0)..<max(min(cx + rx + 1, width), max(cx - rx, 0)) {
                let dx = Double(x - cx) / Double(max(rx, 1)), dy = Double(y - cy) / Double(max(ry, 1))
                if dx * dx + dy * dy <= 1 { set(x, y, value, colour(x, y)) }
            }
        }
    }

    private mutating func set(_ x: Int, _ y: Int, _ value: SyntheticDataset.Label, _ colour: [Double]) {
        let p = y * width + x
        label[p] = value.rawValue
        for c in 0..<3 { rgb[p * 3 + c] = colour[c] }
    }

    /// Adds N(0, noise²) to every value and quantises to 8 bits.
    func finished(noise: Double, _ rng: inout SplitMix64) -> (image: PixelImage, label: LabelImage) {
        let pixels = rgb.map { UInt8(min(max($0 + noise * rng.normal(), 0), 255).rounded()) }
        return (PixelImage(width: width, height: height, channels: 3, pixels: pixels),
                LabelImage(width: width, height: height, values: label))
    }
}

extension SplitMix64 {
    /// Uniform in [lo, hi).
    mutating func range(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * uniform() }

    /// Uniform integer in `range`.
    mutating func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.upperBound - range.lowerBound + 1))
    }
}
