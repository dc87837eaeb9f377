import Foundation
import OCRData
import OCRTensor
import XCTest

/// A small synthetic dataset (10 train, 5 val scenes) in a temporary directory removed after the test.
func makeSyntheticRoot(_ test: XCTestCase) throws -> String {
    let root = try temporaryDirectory(test)
    try SyntheticDataset.write(to: root, train: 10, val: 5, seed: 1)
    return root
}

final class LoaderTests: XCTestCase {
    var syntheticRoot = ""

    override func setUpWithError() throws {
        syntheticRoot = try makeSyntheticRoot(self)
    }

    let pipeline = Pipeline(transforms: [
        .randomResize(RandomResize(scale: (256, 128), ratioRange: 0.5...2.0)),
        .randomCrop(RandomCrop(cropSize: (64, 96), catMaxRatio: 0.75)),
        .randomFlip(RandomFlip()),
        .photoMetricDistortion(PhotoMetricDistortion()),
    ], padSize: (64, 96))

    func trainLoader(ranks: Int = 1, rank: Int = 0, start: SamplerState = SamplerState(), workers: Int = 2,
                     batchSize: Int = 3) throws -> PrefetchLoader {
        let dataset = try SegmentationDataset(type: .synthetic, root: syntheticRoot, split: "train")
        let schedule = TrainingSchedule(order: EpochPermutation(count: dataset.count, seed: 6),
                                        layout: StepLayout(ranks: ranks, batchSize: batchSize), rank: rank, start: start)
        return PrefetchLoader(dataset: dataset, pipeline: pipeline, schedule: schedule, batchSize: batchSize, seed: 6,
                              mode: .training, workers: workers)
    }

    func testBatchesFollowTheScheduleWithTheirShapes() throws {
        let loader = try trainLoader()
        let schedule = TrainingSchedule(order: EpochPermutation(count: 10, seed: 6), layout: StepLayout(ranks: 1, batchSize: 3),
                                        rank: 0)
        for step in 0..<5 {
            let batch = try XCTUnwrap(try loader.next())
            XCTAssertEqual(batch.images.shape, [3, 3, 64, 96])
            XCTAssertEqual(batch.labels.shape, [3, 64, 96])
            XCTAssertEqual(batch.tickets, (0..<3).map { schedule.ticket(at: step * 3 + $0)! })
            XCTAssertTrue(batch.labels.values.allSatisfy { (0..<8).contains($0) || $0 == 255 })
            XCTAssertEqual(batch.state, schedule.state(afterDelivering: (step + 1) * 3))
            // Normalised: (0 − 123.675)/58.395 ≤ x ≤ (255 − 103.53)/57.375.
            XCTAssertTrue(batch.images.array.allSatisfy { $0 >= -2.12 && $0 <= 2.65 })
        }
    }

    /// Same samples whatever the worker count, and the same augmentation of a given (epoch, sample) whatever the
    /// rank count.
    func testOutputIndependentOfWorkersAndRanks() throws {
        func collect(_ loader: PrefetchLoader, batches: Int) throws -> [String: [Float]] {
            var bySample: [String: [Float]] = [:]
            for _ in 0..<batches {
                let batch = try loader.next()!
                let size = batch.images.count / batch.tickets.count
                for (i, t) in batch.tickets.enumerated() {
                    bySample["\(t.epoch)/\(t.datasetIndex)"] = Array(batch.images.array[i * size..<(i + 1) * size])
                }
            }
            return bySample
        }
        let one = try collect(try trainLoader(workers: 1), batches: 4)
        let three = try collect(try trainLoader(workers: 3), batches: 4)
        XCTAssertEqual(one, three)
        var shared = 0
        for rank in 0..<2 {
            let shard = try collect(try trainLoader(ranks: 2, rank: rank, batchSize: 2), batches: 3)
            for (key, values) in shard where one[key] != nil {
                XCTAssertEqual(values, one[key], "sample \(key) augmented differently on 2 ranks")
                shared += 1
            }
        }
        XCTAssertGreaterThan(shared, 4)
    }

    func testResumeContinuesWhereTheStateWasSaved() throws {
        let loader = try trainLoader()
        var batches: [Batch] = []
        for _ in 0..<6 { batches.append(try loader.next()!) } // 18 samples: crosses the 10-sample epoch
        let resumed = try trainLoader(start: batches[1].state)
        for step in 2..<6 {
            let batch = try resumed.next()!
            XCTAssertEqual(batch.tickets, batches[step].tickets)
            XCTAssertEqual(batch.images.array, batches[step].images.array)
            XCTAssertEqual(batch.labels.values, batches[step].labels.values)
        }
    }

    func testEvaluationKeepsLabelsAtTheirSizeAndEnds() throws {
        let dataset = try SegmentationDataset(type: .synthetic, root: syntheticRoot, split: "val")
        let eval = Pipeline(transforms: [.resize(Resize(scale: (128, 64)))])
        let loader = PrefetchLoader(dataset: dataset, pipeline: eval, schedule: EvaluationSchedule(count: 5, ranks: 2, rank: 0),
                                    batchSize: 2, seed: 0, mode: .evaluation)
        let first = try XCTUnwrap(try loader.next()), second = try XCTUnwrap(try loader.next())
        XCTAssertNil(try loader.next())
        XCTAssertEqual(first.tickets.map(\.datasetIndex) + second.tickets.map(\.datasetIndex), [0, 2, 4])
        XCTAssertEqual(first.images.shape, [2, 3, 64, 128])
        XCTAssertEqual(first.labels.shape, [2, 128, 256])
        XCTAssertEqual(second.images.shape[0], 1)
        let original = try dataset.load(2).label
        XCTAssertEqual(Array(first.labels.values[(128 * 256)...]), original.values.map(Int32.init))
    }

    /// A sample smaller than the pad size: the image is padded with 0 (after normalisation), the label with 255.
    func testPaddingUsesZeroForImagesAndIgnoreForLabels() throws {
        let root = try temporaryDirectory(self)
        try writeImage("\(root)/leftImg8bit/val/c/c_0_leftImg8bit.png", width: 30, height: 20, seed: 1)
        try writeLabel("\(root)/gtFine/val/c/c_0_gtFine_labelTrainIds.png", width: 30, height: 20, values: { _ in 4 })
        let dataset = try SegmentationDataset(type: .cityscapes, root: root, split: "val")
        let pipeline = try Pipeline(config: [["type": "RandomCrop", "crop_size": [32, 40]]])
        let loader = PrefetchLoader(dataset: dataset, pipeline: pipeline, schedule: EvaluationSchedule(count: 1, ranks: 1, rank: 0),
                                    batchSize: 1, seed: 0, mode: .training)
        let batch = try loader.next()!
        XCTAssertEqual(batch.images.shape, [1, 3, 32, 40])
        XCTAssertTrue(batch.imageSizes[0] == (20, 30))
        for y in 0..<32 {
            for x in 0..<40 {
                let inside = y < 20 && x < 30
                XCTAssertEqual(batch.labels.values[y * 40 + x], inside ? 4 : 255)
                if !inside { XCTAssertEqual(batch.images[(2 * 32 + y) * 40 + x], 0) }
            }
        }
        XCTAssertNotEqual(batch.images[0], 0)
    }

    func testABadSampleSurfacesAsAnErrorNamingTheFile() throws {
        let root = try temporaryDirectory(self)
        for i in 0..<4 {
            try writeImage("\(root)/leftImg8bit/train/c/c_\(i)_leftImg8bit.png", width: 16, height: 8, seed: UInt64(i))
            try writeLabel("\(root)/gtFine/train/c/c_\(i)_gtFine_labelTrainIds.png", width: 16, height: 8, values: { _ in 1 })
        }
        let bad = "\(root)/leftImg8bit/train/c/c_2_leftImg8bit.png"
        try Data([0x89, 0x50, 0x4E, 0x47]).write(to: URL(fileURLWithPath: bad))
        let dataset = try SegmentationDataset(type: .cityscapes, root: root, split: "train")
        let loader = PrefetchLoader(dataset: dataset, pipeline: Pipeline(transforms: []),
                                    schedule: EvaluationSchedule(count: 4, ranks: 1, rank: 0), batchSize: 2, seed: 0,
                                    mode: .training)
        XCTAssertNotNil(try loader.next())
        assertDataError(bad, "not a PNG or JPEG") { _ = try loader.next() }
    }

    /// Decode + augment throughput on Cityscapes-sized input: a 2048×1024 PNG and its label through the
    /// Cityscapes train pipeline (RandomResize 0.5–2 of 2048×1024, 512×1024 crop with cat_max_ratio, flip,
    /// photometric, normalise). Prints the rates; asserts only that it runs.
    func testCityscapesSizedThroughput() throws {
        let root = try temporaryDirectory(self)
        // A picture-like PNG: a synthetic scene scaled ×8 plus fine noise, so it compresses like a photo
        // (about 2 bits per pixel rather than near-flat colour).
        let scene = SyntheticDataset.render(seed: 3, split: "train", index: 0)
        var image = resizeBilinear(scene.image, ResizeWindow(targetWidth: 2048, targetHeight: 1024))
        var rng = SplitMix64(seed: 1)
        for i in 0..<image.pixels.count { image.pixels[i] = UInt8(clamping: Int(image.pixels[i]) + Int(rng.next() % 9) - 4) }
        let label = resizeNearest(scene.label, ResizeWindow(targetWidth: 2048, targetHeight: 1024))
        let imagePath = "\(root)/leftImg8bit/train/c/c_0_leftImg8bit.png"
        try FileManager.default.createDirectory(atPath: "\(root)/leftImg8bit/train/c", withIntermediateDirectories: true)
        try ImageCodec.writeRGB(image, to: imagePath)
        try writeLabel("\(root)/gtFine/train/c/c_0_gtFine_labelTrainIds.png", width: 2048, height: 1024,
                       values: { label.values[$0] })
        let bytes = (try FileManager.default.attributesOfItem(atPath: imagePath)[.size] as? Int) ?? 0
        let dataset = try SegmentationDataset(type: .synthetic, root: root, split: "train")
        let pipeline = try Pipeline(config: [
            ["type": "RandomResize", "scale": [2048, 1024], "ratio_range": [0.5, 2.0]],
            ["type": "RandomCrop", "crop_size": [512, 1024], "cat_max_ratio": 0.75],
            ["type": "RandomFlip", "prob": 0.5],
            ["type": "PhotoMetricDistortion"],
        ])

        let decodeStart = Date()
        for _ in 0..<4 { _ = try dataset.load(0) }
        let decodeMs = Date().timeIntervalSince(decodeStart) / 4 * 1000
        let loaded = try dataset.load(0)
        let augmentStart = Date()
        for epoch in 0..<6 {
            _ = pipeline.apply(AugmentedSample(image: loaded.image, label: loaded.label), seed: 0, epoch: epoch, sampleIndex: 0)
        }
        let augmentMs = Date().timeIntervalSince(augmentStart) / 6 * 1000
        var report = String(format: "Cityscapes-sized sample (2048×1024 PNG, %.1f MB): decode image+label %.1f ms, "
                                  + "augment %.1f ms (one thread)", Double(bytes) / 1e6, decodeMs, augmentMs)
        for workers in [1, 2] {
            // One file: a new epoch each sample.
            let schedule = TrainingSchedule(order: EpochPermutation(count: 1, seed: 0), layout: StepLayout(ranks: 1, batchSize: 2),
                                            rank: 0)
            let loader = PrefetchLoader(dataset: dataset, pipeline: pipeline, schedule: schedule,
                                        batchSize: 2, seed: 0, mode: .training, workers: workers)
            _ = try loader.next()
            let start = Date()
            let batches = 4
            for _ in 0..<batches {
                let batch = try loader.next()!
                XCTAssertEqual(batch.images.shape, [2, 3, 512, 1024])
            }
            let rate = Double(batches * 2) / Date().timeIntervalSince(start)
            report += String(format: "; loader with %d worker%@: %.1f samples/s", workers, workers == 1 ? "" : "s", rate)
        }
        print(report)
    }
}

final class DataConfigTests: XCTestCase {
    func testTheInterfaceBlockBuildsLoaders() throws {
        let block: [String: Any] = [
            "type": "synthetic", "data_root": try makeSyntheticRoot(self), "batch_size": 2,
            "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
            "train_pipeline": [
                ["type": "RandomResize", "scale": [256, 128], "ratio_range": [0.5, 2.0]],
                ["type": "RandomCrop", "crop_size": [64, 128], "cat_max_ratio": 0.75],
                ["type": "RandomFlip", "prob": 0.5],
                ["type": "PhotoMetricDistortion"],
            ],
        ]
        let config = try DataConfig(block)
        XCTAssertEqual(config.type, .synthetic)
        XCTAssertEqual(config.trainPipeline.transforms.count, 4)
        XCTAssertTrue(config.testPipeline.transforms.isEmpty)
        let train = try config.trainDataset(), val = try config.valDataset()
        XCTAssertEqual([train.count, val.count], [10, 5])
        let batch = try config.trainLoader(train, layout: StepLayout(ranks: 2, batchSize: config.batchSize), rank: 1, seed: 0).next()!
        XCTAssertEqual(batch.images.shape, [2, 3, 64, 128])
        var seen: [Int] = []
        for rank in 0..<2 {
            let loader = config.evalLoader(val, rank: rank, ranks: 2)
            while let batch = try loader.next() {
                XCTAssertEqual(batch.images.shape, [1, 3, SyntheticDataset.height, SyntheticDataset.width])
                seen += batch.tickets.map(\.datasetIndex)
            }
        }
        XCTAssertEqual(seen.sorted(), [0, 1, 2, 3, 4])
    }

    func testBadBlocksNameTheKey() {
        func failure(_ block: [String: Any]) -> String {
            do { _ = try DataConfig(block); return "no error" } catch { return "\(error)" }
        }
        let base: [String: Any] = ["type": "cityscapes", "data_root": "data/cityscapes"]
        XCTAssertEqual(failure(base), "no error")
        XCTAssertTrue(failure(base.merging(["batch_sise": 2]) { $1 }).contains("data.batch_sise: unknown key"))
        XCTAssertTrue(failure(base.merging(["type": "coco"]) { $1 }).contains("data.type must be one of"))
        XCTAssertTrue(failure(base.merging(["batch_size": 0]) { $1 }).contains("data.batch_size must be a positive integer"))
        XCTAssertTrue(failure(base.merging(["std": [1, 2]]) { $1 }).contains("data.std must be three"))
        XCTAssertTrue(failure(base.merging(["train_pipeline": [["type": "RandomFlip", "p": 1]]]) { $1 })
            .contains("data.train_pipeline: pipeline entry 0 (RandomFlip): unknown key 'p'"))
    }
}
