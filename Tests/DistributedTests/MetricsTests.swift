import OCRDistributed
import OCRTrain
import XCTest

final class MetricsTests: XCTestCase {
    /// A hand-made 4-class case: class 3 appears in neither labels nor predictions and is skipped by the means;
    /// class 2 is predicted but never labelled (IoU 0 counts, Acc undefined).
    func testCountsAndMetricsFollowMMSeg() {
        var counts = SegmentationCounts(numClasses: 4)
        let label: [Int32] = [0, 0, 0, 1, 1, 255, 0, 1]
        let prediction: [Int32] = [0, 0, 1, 1, 2, 3, 0, 1]
        counts.add(prediction: prediction, label: label)
        XCTAssertEqual(counts.intersect, [3, 2, 0, 0])
        XCTAssertEqual(counts.predicted, [3, 3, 1, 0], "the pixel labelled 255 is ignored, its prediction too")
        XCTAssertEqual(counts.labelled, [4, 3, 0, 0])
        XCTAssertEqual(counts.union, [4, 4, 1, 0])
        let m = counts.metrics
        XCTAssertEqual(m.aAcc!, 100 * 5 / 7, accuracy: 1e-12)
        XCTAssertEqual(m.iou[0]!, 75, accuracy: 1e-12)
        XCTAssertEqual(m.iou[1]!, 50, accuracy: 1e-12)
        XCTAssertEqual(m.iou[2]!, 0, accuracy: 1e-12)
        XCTAssertNil(m.iou[3])
        XCTAssertNil(m.acc[2])
        XCTAssertEqual(m.mIoU!, (75 + 50 + 0) / 3, accuracy: 1e-12)
        XCTAssertEqual(m.mAcc!, (75 + 100 * 2 / 3.0) / 2, accuracy: 1e-12)
    }

    func testReductionOverOneProcessKeepsCounts() {
        var counts = SegmentationCounts(numClasses: 2)
        counts.add(prediction: [0, 1, 1], label: [0, 1, 0])
        let before = counts
        counts.reduce(over: SingleProcess())
        XCTAssertEqual(counts, before)
    }
}
