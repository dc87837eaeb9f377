import Foundation

/// The `data.type` of the config.
public enum DatasetType: String, CaseIterable {
    case cityscapes, ade20k, voc, synthetic
}

/// How raw label-file values become training labels (a 256-entry lookup table; 255 stays ignore).
extension DatasetType {
    /// Class names and palette of the dataset.
    public var classes: ClassInfo {
        switch self {
        case .cityscapes: .cityscapes
        case .synthetic: SyntheticDataset.classes
        case .ade20k: .ade20k
        case .voc: .voc
        }
    }
}

public enum LabelEncoding: Equatable {
    /// The file already holds train ids (Cityscapes labelTrainIds, VOC, synthetic).
    case identity
    /// Cityscapes `*_gtFine_labelIds.png`: the 19 evaluated label ids → train ids 0…18, everything else → 255.
    case cityscapesLabelIds
    /// ADE20K's reduce_zero_label: 0 (other) → 255, 1…150 → 0…149.
    case reduceZeroLabel

    /// The Cityscapes label id of each train id 0…18 (cityscapesScripts' labels.py).
    public static let cityscapesEvaluatedLabelIds: [UInt8] = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27,
                                                             28, 31, 32, 33]

    public var lookup: [UInt8] {
        switch self {
        case .identity:
            return (0...255).map { UInt8($0) }
        case .cityscapesLabelIds:
            var table = [UInt8](repeating: LabelImage.ignore, count: 256)
            for (trainId, labelId) in Self.cityscapesEvaluatedLabelIds.enumerated() { table[Int(labelId)] = UInt8(trainId) }
            return table
        case .reduceZeroLabel:
            var table = [UInt8](repeating: LabelImage.ignore, count: 256)
            for value in 1..<255 { table[value] = UInt8(value - 1) }
            return table
        }
    }

    /// A label file's values as train ids, each one checked: below `classCount` or 255 (ignore). The first value
    /// outside is an error naming the file and the pixel.
    public func trainIds(_ raw: LabelImage, classCount: Int, path: String) throws -> LabelImage {
        var label = raw
        let table = lookup
        var firstBad: (offset: Int, raw: UInt8, mapped: UInt8)?
        for i in 0..<label.values.count {
            let mapped = table[Int(label.values[i])]
            if Int(mapped) >= classCount, mapped != LabelImage.ignore, firstBad == nil {
                firstBad = (i, label.values[i], mapped)
            }
            label.values[i] = mapped
        }
        if let bad = firstBad {
            let encoded = self == .identity ? "" : " (file value \(bad.raw))"
            throw DataError(path, "label value \(bad.mapped)\(encoded) at x=\(bad.offset % label.width), "
                                + "y=\(bad.offset / label.width) is outside 0..<\(classCount) and not 255 (ignore)")
        }
        return label
    }
}

/// One image and its label file (nil: a split without labels, such as Cityscapes' test split for the server).
public struct SampleFiles: Equatable {
    public let image: String
    public let label: String?
    public let encoding: LabelEncoding
    /// A short name for outputs (prediction files): the image file name without its suffix.
    public let name: String
}

/// A segmentation dataset in its mmseg directory layout. Construction lists and pairs the files (a missing label,
/// an empty split or a wrong layout fails here, before any training); `load` decodes one sample and checks it.
public struct SegmentationDataset {
    public let type: DatasetType
    public let root: String
    public let split: String
    public let classes: ClassInfo
    public let samples: [SampleFiles]

    public var count: Int { samples.count }
    public var numClasses: Int { classes.count }

    /// `split` is "train" or "val" for every type (ADE20K's training/validation and VOC's list names such as
    /// "trainaug" or "aug" are accepted too); "a+b" concatenates splits in that order, as mmseg's ConcatDataset
    /// (its VOC recipes train on train+aug). With `labelsOptional` (Cityscapes only: `eval --format-only`) images
    /// without a label file are listed too, their labels all ignored.
    public init(type: DatasetType, root: String, split: String, labelsOptional: Bool = false) throws {
        self.type = type
        self.root = root
        self.split = split
        classes = type.classes
        samples = try split.split(separator: "+", omittingEmptySubsequences: false).flatMap { part in
            let part = String(part)
            switch type {
            case .cityscapes, .synthetic:
                return try Self.cityscapesSamples(root: root, split: part, labelsOptional: labelsOptional)
            case .ade20k: return try Self.ade20kSamples(root: root, split: part)
            case .voc: return try Self.vocSamples(root: root, split: part)
            }
        }
    }

    /// "path size" of every image and label file, relative to the root and sorted: what the ranks of a job compare
    /// to be sure node-local copies of a dataset hold the same files (a missing file has size -1).
    public var listing: [String] {
        let prefix = root.hasSuffix("/") ? root : root + "/"
        return samples.flatMap { [$0.image, $0.label].compactMap { $0 } }.map { path in
            var info = stat()
            let size = stat(path, &info) == 0 ? Int64(info.st_size) : -1
            let relative = path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : path
            return "\(relative) \(size)"
        }.sorted()
    }

    /// Sample `index` decoded: image H×W×3 RGB and its label in train ids. Throws a `DataError` naming the file for
    /// an undecodable image or label, a label whose size differs from the image's, or a label value that is
    /// neither a class (0..<numClasses) nor 255.
    public func load(_ index: Int) throws -> (image: PixelImage, label: LabelImage) {
        let files = samples[index]
        let image = try ImageCodec.readRGB(files.image)
        guard let labelFile = files.label else {
            return (image, LabelImage(width: image.width, height: image.height, filledWith: LabelImage.ignore))
        }
        let label = try files.encoding.trainIds(try ImageCodec.readLabel(labelFile), classCount: numClasses, path: labelFile)
        guard label.width == image.width, label.height == image.height else {
            throw DataError(labelFile, "label is \(label.width)×\(label.height) (W×H) but its image "
                                       + "\(files.image) is \(image.width)×\(image.height)")
        }
        return (image, label)
    }

    // MARK: Layouts

    private static func directoryExists(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    private static func fileExists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    private static func requireDirectory(_ path: String, _ layout: String) throws {
        guard directoryExists(path) else {
            throw DataError(path, "directory not found: not a \(layout) layout (see docs/DATA.md)")
        }
    }

    /// Files under `directory` (recursively) whose names end with `suffix`, relative paths sorted.
    private static func files(under directory: String, endingWith suffix: String) -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: directory) else { return [] }
        var found: [String] = []
        while let relative = walker.nextObject() as? String {
            if relative.hasSuffix(suffix) { found.append(relative) }
        }
        return found.sorted()
    }

    /// `leftImg8bit/<split>/<city>/<name>_leftImg8bit.png` paired with `gtFine/<split>/<city>/<name>_gtFine_
    /// labelTrainIds.png`, or, when that file is absent, `..._gtFine_labelIds.png` mapped to train ids.
    static func cityscapesSamples(root: String, split: String, labelsOptional: Bool) throws -> [SampleFiles] {
        let imageRoot = "\(root)/leftImg8bit/\(split)", labelRoot = "\(root)/gtFine/\(split)"
        try requireDirectory(imageRoot, "Cityscapes")
        if !labelsOptional { try requireDirectory(labelRoot, "Cityscapes") }
        let imageSuffix = "_leftImg8bit.png"
        let images = files(under: imageRoot, endingWith: imageSuffix)
        guard !images.isEmpty else { throw DataError(imageRoot, "empty split: no *\(imageSuffix) files") }
        return try images.map { relative in
            let stem = String(relative.dropLast(imageSuffix.count))
            let trainIds = "\(labelRoot)/\(stem)_gtFine_labelTrainIds.png"
            let labelIds = "\(labelRoot)/\(stem)_gtFine_labelIds.png"
            let image = "\(imageRoot)/\(relative)"
            let name = (stem as NSString).lastPathComponent
            if fileExists(trainIds) { return SampleFiles(image: image, label: trainIds, encoding: .identity, name: name) }
            if fileExists(labelIds) {
                return SampleFiles(image: image, label: labelIds, encoding: .cityscapesLabelIds, name: name)
            }
            if labelsOptional { return SampleFiles(image: image, label: nil, encoding: .identity, name: name) }
            throw DataError(image, "missing label: neither \(trainIds) nor \(labelIds) exists")
        }
    }

    /// `[ADEChallengeData2016/]images/{training,validation}/*.jpg` with `annotations/.../*.png`.
    static func ade20kSamples(root: String, split: String) throws -> [SampleFiles] {
        let base = directoryExists("\(root)/ADEChallengeData2016") ? "\(root)/ADEChallengeData2016" : root
        let folder = ["train": "training", "val": "validation"][split] ?? split
        let imageRoot = "\(base)/images/\(folder)", labelRoot = "\(base)/annotations/\(folder)"
        try requireDirectory(imageRoot, "ADE20K")
        try requireDirectory(labelRoot, "ADE20K")
        let images = files(under: imageRoot, endingWith: ".jpg")
        guard !images.isEmpty else { throw DataError(imageRoot, "empty split: no *.jpg files") }
        return try images.map { relative in
            let stem = String(relative.dropLast(4))
            let image = "\(imageRoot)/\(relative)", label = "\(labelRoot)/\(stem).png"
            guard fileExists(label) else { throw DataError(image, "missing label: \(label) does not exist") }
            return SampleFiles(image: image, label: label, encoding: .reduceZeroLabel,
                               name: (stem as NSString).lastPathComponent)
        }
    }

    /// `[VOC2012/]ImageSets/Segmentation/<split>.txt` listing ids of `JPEGImages/<id>.jpg`; labels are the
    /// palette-indexed `SegmentationClass/<id>.png`, or for the augmented lists ("trainaug", "aug")
    /// `SegmentationClassAug/<id>.png`.
    static func vocSamples(root: String, split: String) throws -> [SampleFiles] {
        let base = directoryExists("\(root)/VOC2012") ? "\(root)/VOC2012" : root
        try requireDirectory("\(base)/JPEGImages", "Pascal VOC 2012")
        let labelFolder = split == "trainaug" || split == "aug" ? "SegmentationClassAug" : "SegmentationClass"
        try requireDirectory("\(base)/\(labelFolder)", "Pascal VOC 2012")
        let listPath = "\(base)/ImageSets/Segmentation/\(split).txt"
        guard let list = try? String(contentsOfFile: listPath, encoding: .utf8) else {
            throw DataError(listPath, "split list not found or unreadable: not a Pascal VOC 2012 layout")
        }
        let ids = list.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        guard !ids.isEmpty else { throw DataError(listPath, "empty split: the list names no images") }
        return try ids.map { id in
            let image = "\(base)/JPEGImages/\(id).jpg", label = "\(base)/\(labelFolder)/\(id).png"
            guard fileExists(image) else { throw DataError(image, "image listed in \(listPath) does not exist") }
            guard fileExists(label) else { throw DataError(image, "missing label: \(label) does not exist") }
            return SampleFiles(image: image, label: label, encoding: .identity, name: id)
        }
    }
}
