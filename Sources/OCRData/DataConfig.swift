/// The config's `data:` block (docs/INTERFACE.md) as plain values, and the loaders it describes:
///
/// ```yaml
/// data:
///   type: cityscapes          # cityscapes | ade20k | voc | synthetic
///   data_root: data/cityscapes
///   batch_size: 2             # per rank
///   mean: [123.675, 116.28, 103.53]
///   std: [58.395, 57.12, 57.375]
///   train_pipeline: [...]     # mmseg transforms; [] = images as they are
///   test_pipeline: [...]      # optional, e.g. [{type: Resize, scale: [2048, 1024], keep_ratio: true}];
///                             #   default: none (whole image at its original resolution)
///   train_split: train        # optional (VOC: trainaug for the augmented set)
///   val_split: val            # optional
///   num_workers: 1            # optional: decoding/augmentation threads per rank
/// ```
public struct DataConfig {
    public var type: DatasetType
    public var dataRoot: String
    public var batchSize: Int
    public var trainPipeline: Pipeline
    public var testPipeline: Pipeline
    public var trainSplit: String
    public var valSplit: String
    public var workers: Int

    public static let keys: Set<String> = ["type", "data_root", "batch_size", "mean", "std", "train_pipeline",
                                           "test_pipeline", "train_split", "val_split", "num_workers"]

    /// Reads the block as the YAML reader hands it over (strings, numbers, lists, dictionaries). Unknown keys and
    /// wrong types are errors naming `data.<key>`.
    public init(_ block: [String: Any]) throws {
        for key in block.keys where !Self.keys.contains(key) {
            throw DataConfigError("data.\(key): unknown key (known: \(Self.keys.sorted().joined(separator: ", ")))")
        }
        guard let typeName = block["type"] as? String, let type = DatasetType(rawValue: typeName) else {
            throw DataConfigError("data.type must be one of \(DatasetType.allCases.map(\.rawValue).joined(separator: ", ")), "
                                + "got \(block["type"].map { "\($0)" } ?? "nothing")")
        }
        guard let root = block["data_root"] as? String, !root.isEmpty else {
            throw DataConfigError("data.data_root must be a directory path")
        }
        func numbers(_ key: String) throws -> [Double]? {
            guard let value = block[key] else { return nil }
            guard let list = value as? [Any] else { throw DataConfigError("data.\(key) must be a list of numbers") }
            return try list.map { item in
                switch item {
                case let v as Int: return Double(v)
                case let v as Double: return v
                default: throw DataConfigError("data.\(key) must be a list of numbers, got \(value)")
                }
            }
        }
        func pipeline(_ key: String) throws -> Pipeline {
            guard let value = block[key] else { return try Pipeline(config: [], mean: numbers("mean"), std: numbers("std")) }
            guard let entries = value as? [[String: Any]] else {
                throw DataConfigError("data.\(key) must be a list of transforms ({type: ..., ...})")
            }
            do {
                return try Pipeline(config: entries, mean: numbers("mean"), std: numbers("std"))
            } catch let error as DataConfigError {
                throw DataConfigError("data.\(key): \(error.description)")
            }
        }
        func positiveInt(_ key: String, default value: Int) throws -> Int {
            guard let raw = block[key] else { return value }
            guard let v = raw as? Int, v > 0 else { throw DataConfigError("data.\(key) must be a positive integer, got \(raw)") }
            return v
        }
        func string(_ key: String, default value: String) throws -> String {
            guard let raw = block[key] else { return value }
            guard let v = raw as? String else { throw DataConfigError("data.\(key) must be a string, got \(raw)") }
            return v
        }
        self.type = type
        dataRoot = root
        batchSize = try positiveInt("batch_size", default: 2)
        trainPipeline = try pipeline("train_pipeline")
        testPipeline = try pipeline("test_pipeline")
        trainSplit = try string("train_split", default: "train")
        valSplit = try string("val_split", default: "val")
        workers = try positiveInt("num_workers", default: 1)
    }

    public func trainDataset() throws -> SegmentationDataset {
        try SegmentationDataset(type: type, root: dataRoot, split: trainSplit)
    }

    /// The validation split; with `labelsOptional`, images without labels too (`eval --format-only`).
    public func valDataset(labelsOptional: Bool = false) throws -> SegmentationDataset {
        try SegmentationDataset(type: type, root: dataRoot, split: valSplit, labelsOptional: labelsOptional)
    }

    /// This rank's endless training stream from `start` (the saved sampler state, or the beginning), in micro-batches
    /// of `layout.batchSize` (which may differ from `batchSize` when a resume on another rank count keeps the global
    /// batch).
    public func trainLoader(_ dataset: SegmentationDataset, layout: StepLayout, rank: Int, seed: UInt64,
                            start: SamplerState = SamplerState()) -> PrefetchLoader {
        PrefetchLoader(dataset: dataset, pipeline: trainPipeline,
                       schedule: TrainingSchedule(order: EpochPermutation(count: dataset.count, seed: seed),
                                                  layout: layout, rank: rank, start: start),
                       batchSize: layout.batchSize, seed: seed, mode: .training, workers: workers)
    }

    /// This rank's share of the validation split, one image per batch (whole images differ in size), labels at
    /// their original resolution; with `augmentation`, each image as its test-time views.
    public func evalLoader(_ dataset: SegmentationDataset, rank: Int, ranks: Int,
                           augmentation: TestTimeAugmentation? = nil) -> PrefetchLoader {
        PrefetchLoader(dataset: dataset, pipeline: testPipeline,
                       schedule: EvaluationSchedule(count: dataset.count, ranks: ranks, rank: rank), batchSize: 1,
                       seed: 0, mode: augmentation.map { .testTimeAugmentation($0) } ?? .evaluation, workers: workers,
                       // An image's views are many times its size: keep one image ready, not three.
                       prefetchBatches: augmentation == nil ? 2 : 0)
    }
}
