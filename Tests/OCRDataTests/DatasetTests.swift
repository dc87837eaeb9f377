import Foundation
import OCRData
import OCRTensor
import OCRTestSupport
import XCTest

/// Writes a random-noise RGB PNG of `width`×`height`.
func writeImage(_ path: String, width: Int, height: Int, seed: UInt64) throws {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                            withIntermediateDirectories: true)
    var rng = SplitMix64(seed: seed)
    let pixels = (0..<width * height * 3).map { _ in UInt8(rng.next() & 255) }
    try ImageCodec.writeRGB(PixelImage(width: width, height: height, channels: 3, pixels: pixels), to: path)
}

func writeLabel(_ path: String, width: Int, height: Int, values: (Int) -> UInt8, palette: [[UInt8]]? = nil) throws {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                            withIntermediateDirectories: true)
    try ImageCodec.writeLabel(LabelImage(width: width, height: height, values: (0..<width * height).map(values)),
                              to: path, palette: palette)
}

final class DatasetTests: XCTestCase {
    /// A two-city Cityscapes layout: one sample with labelTrainIds, one with only labelIds.
    func makeCityscapes(_ root: String) throws {
        try writeImage("\(root)/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png", width: 8, height: 4, seed: 1)
        try writeLabel("\(root)/gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png", width: 8, height: 4,
                       values: { $0 % 2 == 0 ? 18 : 255 })
        try writeImage("\(root)/leftImg8bit/train/bremen/bremen_000001_000019_leftImg8bit.png", width: 8, height: 4, seed: 2)
        // labelIds 7 (road → 0), 26 (car → 13), 33 (bicycle → 18), 0 (unlabeled → 255), 4 (static → 255).
        let ids: [UInt8] = [7, 26, 33, 0, 4]
        try writeLabel("\(root)/gtFine/train/bremen/bremen_000001_000019_gtFine_labelIds.png", width: 8, height: 4,
                       values: { ids[$0 % ids.count] })
    }

    func testCityscapesPairsFilesAndMapsLabelIds() throws {
        let root = try temporaryDirectory(self)
        try makeCityscapes(root)
        let dataset = try SegmentationDataset(type: .cityscapes, root: root, split: "train")
        XCTAssertEqual(dataset.count, 2)
        XCTAssertEqual(dataset.numClasses, 19)
        XCTAssertEqual(dataset.samples.map(\.name), ["aachen_000000_000019", "bremen_000001_000019"])
        XCTAssertEqual(dataset.samples.map(\.encoding), [.identity, .cityscapesLabelIds])
        let (image, first) = try dataset.load(0)
        XCTAssertEqual([image.width, image.height, image.channels], [8, 4, 3])
        XCTAssertEqual(Array(first.values.prefix(4)), [18, 255, 18, 255])
        let mapped = try dataset.load(1).label
        XCTAssertEqual(Array(mapped.values.prefix(5)), [0, 13, 18, 255, 255])
    }

    func testADE20KReducesZeroLabel() throws {
        let root = try temporaryDirectory(self) + "/ADEChallengeData2016"
        let jpeg = try Data(contentsOf: Fixtures.url("images/rgb420.jpg"))
        try FileManager.default.createDirectory(atPath: "\(root)/images/validation", withIntermediateDirectories: true)
        try jpeg.write(to: URL(fileURLWithPath: "\(root)/images/validation/ADE_val_00000001.jpg"))
        let raw: [UInt8] = [0, 1, 150, 255, 37]
        try writeLabel("\(root)/annotations/validation/ADE_val_00000001.png", width: 37, height: 29,
                       values: { raw[$0 % raw.count] })
        let dataset = try SegmentationDataset(type: .ade20k, root: (root as NSString).deletingLastPathComponent, split: "val")
        XCTAssertEqual(dataset.numClasses, 150)
        XCTAssertEqual(Array(try dataset.load(0).label.values.prefix(5)), [255, 0, 149, 255, 36])
    }

    func makeVOC(_ root: String, ids: [String], split: String, aug: Bool) throws {
        let jpeg = try Data(contentsOf: Fixtures.url("images/rgb420.jpg"))
        try FileManager.default.createDirectory(atPath: "\(root)/JPEGImages", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(root)/ImageSets/Segmentation", withIntermediateDirectories: true)
        for id in ids {
            try jpeg.write(to: URL(fileURLWithPath: "\(root)/JPEGImages/\(id).jpg"))
            let folder = aug ? "SegmentationClassAug" : "SegmentationClass"
            try writeLabel("\(root)/\(folder)/\(id).png", width: 37, height: 29, values: { UInt8($0 % 21) },
                           palette: aug ? nil : ClassInfo.voc.fullPalette)
        }
        try (ids.joined(separator: "\n") + "\n").write(toFile: "\(root)/ImageSets/Segmentation/\(split).txt",
                                                      atomically: true, encoding: .utf8)
    }

    func testVOCReadsPaletteIndicesAndTheAugmentedSet() throws {
        let root = try temporaryDirectory(self) + "/VOC2012"
        try makeVOC(root, ids: ["2007_000032", "2007_000039"], split: "val", aug: false)
        try makeVOC(root, ids: ["2008_000008"], split: "trainaug", aug: true)
        let val = try SegmentationDataset(type: .voc, root: root, split: "val")
        XCTAssertEqual(val.samples.map(\.name), ["2007_000032", "2007_000039"])
        XCTAssertEqual(Array(try val.load(1).label.values.prefix(22)), (0..<22).map { UInt8($0 % 21) })
        let aug = try SegmentationDataset(type: .voc, root: (root as NSString).deletingLastPathComponent, split: "trainaug")
        XCTAssertTrue(aug.samples[0].label!.hasSuffix("SegmentationClassAug/2008_000008.png"))
        XCTAssertEqual(try aug.load(0).label.values[20], 20)
    }

    // MARK: Bad input (docs/DATA.md): every one an error naming the file and the problem.

    func testMissingPair() throws {
        let root = try temporaryDirectory(self)
        try makeCityscapes(root)
        let image = "\(root)/leftImg8bit/train/bremen/bremen_000002_000019_leftImg8bit.png"
        try writeImage(image, width: 8, height: 4, seed: 3)
        assertDataError(image, "missing label") { _ = try SegmentationDataset(type: .cityscapes, root: root, split: "train") }
    }

    func testTruncatedPNGInADataset() throws {
        let root = try temporaryDirectory(self)
        try makeCityscapes(root)
        let label = "\(root)/gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: label))
        try bytes.prefix(bytes.count - 20).write(to: URL(fileURLWithPath: label))
        let dataset = try SegmentationDataset(type: .cityscapes, root: root, split: "train")
        assertDataError(label, "truncated") { _ = try dataset.load(0) }
    }

    func testCorruptJPEGInADataset() throws {
        let root = try temporaryDirectory(self) + "/VOC2012"
        try makeVOC(root, ids: ["2007_000032"], split: "train", aug: false)
        let image = "\(root)/JPEGImages/2007_000032.jpg"
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
        for i in bytes.count / 2..<bytes.count - 2 { bytes[i] = 0xFF } // entropy data replaced by markers
        try Data(bytes).write(to: URL(fileURLWithPath: image))
        let dataset = try SegmentationDataset(type: .voc, root: root, split: "train")
        assertDataError(image, "corrupt") { _ = try dataset.load(0) }
    }

    func testWrongLabelSize() throws {
        let root = try temporaryDirectory(self)
        try makeCityscapes(root)
        let label = "\(root)/gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png"
        try writeLabel(label, width: 4, height: 4, values: { _ in 1 })
        let dataset = try SegmentationDataset(type: .cityscapes, root: root, split: "train")
        assertDataError(label, "label is 4×4 (W×H) but its image") { _ = try dataset.load(0) }
    }

    func testLabelValueOutOfRange() throws {
        let root = try temporaryDirectory(self)
        try makeCityscapes(root)
        let label = "\(root)/gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png"
        try writeLabel(label, width: 8, height: 4, values: { $0 == 13 ? 19 : 3 })
        let dataset = try SegmentationDataset(type: .cityscapes, root: root, split: "train")
        assertDataError(label, "label value 19 at x=5, y=1 is outside 0..<19") { _ = try dataset.load(0) }
        // ADE20K after reduce_zero_label: raw 151 → 150, outside 0..<150; the message gives the file's value too.
        let ade = try temporaryDirectory(self)
        try FileManager.default.createDirectory(atPath: "\(ade)/images/training", withIntermediateDirectories: true)
        try Data(contentsOf: Fixtures.url("images/rgb420.jpg"))
            .write(to: URL(fileURLWithPath: "\(ade)/images/training/a.jpg"))
        try writeLabel("\(ade)/annotations/training/a.png", width: 37, height: 29, values: { $0 == 0 ? 151 : 1 })
        let adeSet = try SegmentationDataset(type: .ade20k, root: ade, split: "train")
        assertDataError("\(ade)/annotations/training/a.png", "label value 150 (file value 151)") { _ = try adeSet.load(0) }
    }

    func testEmptySplit() throws {
        let root = try temporaryDirectory(self)
        try makeCityscapes(root)
        try FileManager.default.createDirectory(atPath: "\(root)/leftImg8bit/val/x", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(root)/gtFine/val", withIntermediateDirectories: true)
        assertDataError("\(root)/leftImg8bit/val", "empty split") {
            _ = try SegmentationDataset(type: .cityscapes, root: root, split: "val")
        }
        let voc = try temporaryDirectory(self)
        try makeVOC(voc, ids: [], split: "val", aug: false)
        try FileManager.default.createDirectory(atPath: "\(voc)/SegmentationClass", withIntermediateDirectories: true)
        assertDataError("\(voc)/ImageSets/Segmentation/val.txt", "empty split") {
            _ = try SegmentationDataset(type: .voc, root: voc, split: "val")
        }
    }

    func testWrongLayout() throws {
        let root = try temporaryDirectory(self)
        try makeCityscapes(root)
        // A Cityscapes tree read as ADE20K or VOC, and a Cityscapes root without gtFine.
        assertDataError("\(root)/images/training", "not a ADE20K layout") {
            _ = try SegmentationDataset(type: .ade20k, root: root, split: "train")
        }
        assertDataError("\(root)/JPEGImages", "not a Pascal VOC 2012 layout") {
            _ = try SegmentationDataset(type: .voc, root: root, split: "train")
        }
        try FileManager.default.removeItem(atPath: "\(root)/gtFine")
        assertDataError("\(root)/gtFine/train", "not a Cityscapes layout") {
            _ = try SegmentationDataset(type: .cityscapes, root: root, split: "train")
        }
    }

    // MARK: Synthetic dataset

    func testSyntheticGeneratorIsDeterministicAndReadable() throws {
        let a = SyntheticDataset.render(seed: 7, split: "train", index: 3)
        XCTAssertEqual(SyntheticDataset.render(seed: 7, split: "train", index: 3).image, a.image)
        XCTAssertNotEqual(SyntheticDataset.render(seed: 8, split: "train", index: 3).image, a.image)
        XCTAssertNotEqual(SyntheticDataset.render(seed: 7, split: "val", index: 3).image, a.image)

        let root = try temporaryDirectory(self)
        try SyntheticDataset.write(to: root, train: 12, val: 3, seed: 7)
        let train = try SegmentationDataset(type: .synthetic, root: root, split: "train")
        XCTAssertEqual(train.count, 12)
        XCTAssertEqual(try SegmentationDataset(type: .synthetic, root: root, split: "val").count, 3)
        let loaded = try train.load(3)
        XCTAssertEqual(loaded.image, a.image)
        XCTAssertEqual(loaded.label, a.label)
        XCTAssertEqual([loaded.image.height, loaded.image.width], [SyntheticDataset.height, SyntheticDataset.width])
        assertDataError(root, "refusing to overwrite") { try SyntheticDataset.write(to: root, train: 1, val: 1, seed: 7) }
    }

    /// The task needs context: building windows and car windows look the same pixel by pixel (their colour
    /// statistics agree), both appear, and every class appears in a modest number of scenes.
    func testSyntheticClassesArePresentAndWindowsLookAlike() {
        var counts = [Int](repeating: 0, count: 8)
        var colourSums = [[Double]](repeating: [0, 0, 0], count: 8)
        for index in 0..<40 {
            let (image, label) = SyntheticDataset.render(seed: 0, split: "train", index: index)
            for p in 0..<label.values.count {
                let c = Int(label.values[p])
                counts[c] += 1
                for k in 0..<3 { colourSums[c][k] += Double(image.pixels[p * 3 + k]) }
            }
        }
        XCTAssertTrue(counts.allSatisfy { $0 > 0 }, "class pixel counts \(counts)")
        let building = colourSums[6].map { $0 / Double(counts[6]) }, car = colourSums[7].map { $0 / Double(counts[7]) }
        for k in 0..<3 { XCTAssertEqual(building[k], car[k], accuracy: 8, "mean colour of windows: \(building) vs \(car)") }
    }
}
