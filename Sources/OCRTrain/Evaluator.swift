import Foundation
import OCRData
import OCRDistributed
import OCRModel
import OCRTensor

/// Scores a model on a dataset split sharded over the ranks (each image exactly once), sums the int64 counts across
/// ranks, and optionally writes palette predictions blended with their images.
public struct Evaluator {
    public let config: ExperimentConfig
    public let comm: Communicator

    public init(config: ExperimentConfig, comm: Communicator) {
        self.config = config
        self.comm = comm
    }

    /// The counts over the whole split, or nil when `stopRequested` said yes on some rank first. The ranks go
    /// through the split in rounds of one image each (a rank whose shard is shorter joins the last round with none)
    /// and agree after every round on whether any rank failed or was asked to stop: a stop is honoured within one
    /// image, and a corrupt image on one rank ends evaluation on all with that rank's one-line reason.
    /// With `augmentation` (mmseg's tta_pipeline, `eval --tta`) each image is scored on its merged views.
    /// `progress` hears of every round (images done over all ranks). With `formatDirectory` each prediction is also
    /// written there for the Cityscapes test server (`writeCityscapesLabelIds`).
    public func evaluate(model: OCRNet, dataset: SegmentationDataset, data: DataConfig, showDir: String? = nil,
                         augmentation: TestTimeAugmentation? = nil, progress: ProgressReporter? = nil,
                         formatDirectory: String? = nil,
                         stopRequested: () -> Bool = { false }) throws -> SegmentationCounts? {
        let loader = data.evalLoader(dataset, rank: comm.rank, ranks: comm.size, augmentation: augmentation)
        defer { loader.stop() }
        let inference = Inference(model: model, config: config)
        var counts = SegmentationCounts(numClasses: config.model.numClasses)
        var failure: Error?
        let rounds = (dataset.count + comm.size - 1) / comm.size
        let stage = comm.stage
        for round in 0..<rounds {
            comm.stage = "\(stage), evaluation image round \(round + 1)/\(rounds)"
            do {
                if let batch = try loader.next() {
                    try score(batch, inference, dataset, showDir, formatDirectory, into: &counts)
                }
            } catch {
                failure = error
            }
            var flags: [Int64] = [failure == nil ? 0 : 1, stopRequested() ? 1 : 0]
            flags.withUnsafeMutableBufferPointer { comm.allreduceSum($0, phase: "evaluation failure/stop agreement") }
            if flags[0] > 0 { break }
            if flags[1] > 0 { return nil }
            progress?.update(done: min((round + 1) * comm.size, dataset.count))
        }
        comm.stage = stage
        try comm.agreeing("evaluation failure report") {
            if let failure { throw EvaluationError("\(failure)") }
        }
        counts.reduce(over: comm)
        return counts
    }

    private func score(_ batch: Batch, _ inference: Inference, _ dataset: SegmentationDataset, _ showDir: String?,
                       _ formatDirectory: String?, into counts: inout SegmentationCounts) throws {
        let (lh, lw) = (batch.labelSizes[0].height, batch.labelSizes[0].width)
        let probabilities = batch.views[0].isEmpty
            ? inference.probabilities(batch.images, outHeight: lh, outWidth: lw)
            : inference.probabilities(views: batch.views[0], outHeight: lh, outWidth: lw)
        let prediction = Inference.argmax(probabilities)
        let label = Array(batch.labels.values.prefix(lh * lw))
        for (i, y) in label.enumerated() where y != 255 && Int(y) >= config.model.numClasses {
            throw DataError(batch.names[0], "label value \(y) at pixel \(i) is ≥ num_classes \(config.model.numClasses)")
        }
        counts.add(prediction: prediction, label: label)
        if let formatDirectory {
            try Self.writeCityscapesLabelIds(prediction, height: lh, width: lw,
                                             image: dataset.samples[batch.tickets[0].datasetIndex].image,
                                             to: formatDirectory)
        }
        if let showDir {
            try writeOverlay(prediction: prediction, height: lh, width: lw, name: batch.names[0],
                             dataset: dataset, datasetIndex: batch.tickets[0].datasetIndex, to: showDir)
        }
    }

    /// `<name>.png`: the colour prediction blended 50/50 with the original image, for a person to look at.
    func writeOverlay(prediction: [Int32], height: Int, width: Int, name: String, dataset: SegmentationDataset,
                      datasetIndex: Int, to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let (image, _) = try dataset.load(datasetIndex)
        let resized = image.width == width && image.height == height ? image
            : resizeBilinear(image, ResizeWindow(targetWidth: width, targetHeight: height))
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        let palette = dataset.classes.palette
        for j in 0..<(width * height) {
            let colour = palette[Int(prediction[j]) % palette.count]
            for c in 0..<3 {
                let base = Int(resized.pixels[j * resized.channels + min(c, resized.channels - 1)])
                pixels[j * 3 + c] = UInt8((base + Int(colour[c])) / 2)
            }
        }
        try ImageCodec.writeRGB(PixelImage(width: width, height: height, channels: 3, pixels: pixels),
                                to: "\(directory)/\(name).png")
    }

    /// The per-class table mmseg prints, then aAcc / mIoU / mAcc.
    public static func table(_ counts: SegmentationCounts, classNames: [String]) -> String {
        let m = counts.metrics
        let width = max(classNames.map(\.count).max() ?? 5, 5)
        func cell(_ v: Double?) -> String { v.map { String(format: "%6.2f", $0) } ?? "   nan" }
        var lines = ["\("Class".padding(toLength: width, withPad: " ", startingAt: 0)) |    IoU |    Acc"]
        lines.append(String(repeating: "-", count: width + 18))
        for (c, name) in classNames.enumerated() where c < counts.numClasses {
            lines.append("\(name.padding(toLength: width, withPad: " ", startingAt: 0)) | \(cell(m.iou[c])) | \(cell(m.acc[c]))")
        }
        lines.append("aAcc \(cell(m.aAcc))  mIoU \(cell(m.mIoU))  mAcc \(cell(m.mAcc))")
        return lines.joined(separator: "\n")
    }

    /// mmseg's CityscapesMetric with format_only: the prediction (train ids) as Cityscapes label ids in an 8-bit PNG
    /// named after the image (`<image basename>.png`, e.g. frankfurt_000000_000294_leftImg8bit.png), the layout
    /// the test server and cityscapesScripts' evaluator read.
    public static func writeCityscapesLabelIds(_ prediction: [Int32], height: Int, width: Int, image: String,
                                               to directory: String) throws {
        let labelIds = LabelEncoding.cityscapesEvaluatedLabelIds
        let values = prediction.map { labelIds[Int($0)] }
        let name = ((image as NSString).lastPathComponent as NSString).deletingPathExtension
        try ImageCodec.writeLabel(LabelImage(width: width, height: height, values: values), to: "\(directory)/\(name).png")
    }

    /// The JSON object of docs/INTERFACE.md: {"aAcc", "mIoU", "mAcc", "IoU": {class: value}} in percent (null = nan).
    public static func jsonObject(_ counts: SegmentationCounts, classNames: [String]) -> [String: Any] {
        let m = counts.metrics
        var iou: [String: Any] = [:]
        for (c, name) in classNames.enumerated() where c < counts.numClasses {
            iou[name] = m.iou[c].map { round2($0) } ?? NSNull()
        }
        return ["aAcc": m.aAcc.map(round2) ?? NSNull(), "mIoU": m.mIoU.map(round2) ?? NSNull(),
                "mAcc": m.mAcc.map(round2) ?? NSNull(), "IoU": iou]
    }

    static func round2(_ v: Double) -> Double { (v * 100).rounded() / 100 }
}

public struct EvaluationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
