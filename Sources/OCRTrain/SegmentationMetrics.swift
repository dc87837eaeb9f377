import OCRDistributed

/// Per-class pixel counts over an evaluation split, as mmseg's `IoUMetric` accumulates them: over pixels whose
/// label is not 255, intersect_c = #(pred = label = c), predicted_c = #(pred = c), labelled_c = #(label = c),
/// union_c = predicted_c + labelled_c − intersect_c. Int64 so a whole split of 2048×1024 images cannot overflow, and
/// summed across ranks exactly.
public struct SegmentationCounts: Equatable {
    public let numClasses: Int
    public private(set) var intersect: [Int64]
    public private(set) var predicted: [Int64]
    public private(set) var labelled: [Int64]

    public init(numClasses: Int) {
        self.numClasses = numClasses
        intersect = Array(repeating: 0, count: numClasses)
        predicted = intersect
        labelled = intersect
    }

    public var union: [Int64] { (0..<numClasses).map { predicted[$0] + labelled[$0] - intersect[$0] } }

    /// Adds one prediction/label pair of equal size (labels 255 are ignored; other labels must be < numClasses).
    public mutating func add(prediction: [Int32], label: [Int32], ignoreIndex: Int32 = 255) {
        precondition(prediction.count == label.count, "prediction of \(prediction.count) pixels for \(label.count) labels")
        for i in 0..<label.count {
            let y = label[i]
            if y == ignoreIndex { continue }
            let p = Int(prediction[i])
            predicted[p] += 1
            labelled[Int(y)] += 1
            if Int(y) == p { intersect[p] += 1 }
        }
    }

    /// Sums every rank's counts (one all-reduce); afterwards every rank holds the totals.
    public mutating func reduce(over comm: Communicator) {
        var packed = intersect + predicted + labelled
        packed.withUnsafeMutableBufferPointer { comm.allreduceSum($0, phase: "evaluation counts") }
        let k = numClasses
        intersect = Array(packed[0..<k]); predicted = Array(packed[k..<(2 * k)]); labelled = Array(packed[(2 * k)...])
    }

    /// mmseg's summary, in percent: aAcc = Σ intersect / Σ labelled; IoU_c = intersect/union and Acc_c =
    /// intersect/labelled, nil where the denominator is 0 (a class absent from labels and predictions); mIoU and mAcc
    /// are the means over the classes that have a value (numpy's nanmean).
    public var metrics: SegmentationMetrics {
        let u = union
        let iou = (0..<numClasses).map { u[$0] > 0 ? 100 * Double(intersect[$0]) / Double(u[$0]) : nil }
        let acc = (0..<numClasses).map { labelled[$0] > 0 ? 100 * Double(intersect[$0]) / Double(labelled[$0]) : nil }
        let totalLabelled = labelled.reduce(0, +)
        func nanmean(_ v: [Double?]) -> Double? {
            let present = v.compactMap { $0 }
            return present.isEmpty ? nil : present.reduce(0, +) / Double(present.count)
        }
        return SegmentationMetrics(
            aAcc: totalLabelled > 0 ? 100 * Double(intersect.reduce(0, +)) / Double(totalLabelled) : nil,
            mIoU: nanmean(iou), mAcc: nanmean(acc), iou: iou, acc: acc)
    }
}

public struct SegmentationMetrics: Equatable {
    public let aAcc: Double?
    public let mIoU: Double?
    public let mAcc: Double?
    public let iou: [Double?]
    public let acc: [Double?]
}
