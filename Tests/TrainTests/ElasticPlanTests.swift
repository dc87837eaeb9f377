import OCRData
import OCRTrain
import XCTest

/// The layout a resumed run chooses on another rank count (the runs themselves: CLITests/ElasticTests).
final class ElasticPlanTests: XCTestCase {
    func plan(saved: StepLayout, ranks: Int, syncBN: Bool, autoScaleLR: Bool = false,
              fits: (Int) -> Bool = { _ in true }) throws -> ElasticPlan {
        let config = StepLayout(ranks: ranks, batchSize: saved.batchSize, accumulation: saved.accumulation)
        return try ElasticPlan.choose(config: config, saved: saved, syncBN: syncBN, autoScaleLR: autoScaleLR, fits: fits)
    }

    func testKeepsTheGlobalBatchAndWhatBatchNormSees() throws {
        let four = StepLayout(ranks: 4, batchSize: 1)
        let same = try plan(saved: four, ranks: 4, syncBN: true)
        XCTAssertEqual(same.layout, four)
        XCTAssertNil(same.note)
        // Sync BN normalises over ranks × batch: 4 × 1 → 2 × 2 → 1 × 4.
        XCTAssertEqual(try plan(saved: four, ranks: 2, syncBN: true).layout, StepLayout(ranks: 2, batchSize: 2))
        XCTAssertEqual(try plan(saved: four, ranks: 1, syncBN: true).layout, StepLayout(ranks: 1, batchSize: 4))
        // Plain BN over one rank's batch: accumulation takes the ranks' place.
        XCTAssertEqual(try plan(saved: four, ranks: 2, syncBN: false).layout, StepLayout(ranks: 2, batchSize: 1, accumulation: 2))
        // Growing: 1 × 2 × 4 accumulated → 8 ranks × 1 (sync BN then sees 8 images, it cannot keep 2).
        let grown = try plan(saved: StepLayout(ranks: 1, batchSize: 2, accumulation: 4), ranks: 8, syncBN: true)
        XCTAssertEqual(grown.layout, StepLayout(ranks: 8, batchSize: 1))
        XCTAssertTrue(grown.note!.contains("batch norm now normalises over 8 images instead of 2"), grown.note!)
        // Plain BN keeps b = 2 when growing 1 × 2 × 4 → 2 ranks × 2 × 2.
        XCTAssertEqual(try plan(saved: StepLayout(ranks: 1, batchSize: 2, accumulation: 4), ranks: 2, syncBN: false).layout,
                       StepLayout(ranks: 2, batchSize: 2, accumulation: 2))
    }

    /// Where the batch that keeps batch norm does not fit, accumulation makes up the global batch and the note says
    /// that batch norm's batch changed.
    func testFallsBackToAccumulationWhenTheLargerBatchDoesNotFit() throws {
        let p = try plan(saved: StepLayout(ranks: 4, batchSize: 2), ranks: 1, syncBN: true, fits: { $0 <= 2 })
        XCTAssertEqual(p.layout, StepLayout(ranks: 1, batchSize: 2, accumulation: 4))
        XCTAssertTrue(p.note!.contains("normalises over 2 images instead of 8: a batch of 8 per rank does not fit in memory"),
                      p.note!)
        XCTAssertFalse(batchFitsInMemory(8, savedBatch: 2, savedPeakMB: 1e9, ranksOnNode: 1))
        XCTAssertTrue(batchFitsInMemory(8, savedBatch: 2, savedPeakMB: 1, ranksOnNode: 1))
        XCTAssertTrue(batchFitsInMemory(8, savedBatch: 2, savedPeakMB: nil, ranksOnNode: 1), "unknown peak: assumed to fit")
    }

    func testIndivisibleGlobalBatchNamesWhatWorks() throws {
        XCTAssertThrowsError(try plan(saved: StepLayout(ranks: 4, batchSize: 3), ranks: 5, syncBN: true)) { error in
            XCTAssertTrue("\(error)".contains("global batch 12 (4 rank(s) × batch 3) cannot be split over 5 ranks: "
                                              + "resume on 1, 2, 3, 4, 6, 12 ranks"), "\(error)")
        }
        let scaled = try plan(saved: StepLayout(ranks: 4, batchSize: 3), ranks: 5, syncBN: true, autoScaleLR: true)
        XCTAssertEqual(scaled.layout, StepLayout(ranks: 5, batchSize: 3))
    }

    /// An edited config's batch is the user's choice: it runs as written, and the note says what it does to the
    /// global batch.
    func testAnEditedBatchRunsAsWritten() throws {
        let edited = try ElasticPlan.choose(config: StepLayout(ranks: 2, batchSize: 4), saved: StepLayout(ranks: 2, batchSize: 2),
                                            syncBN: true, autoScaleLR: false, fits: { _ in true })
        XCTAssertEqual(edited.layout, StepLayout(ranks: 2, batchSize: 4))
        XCTAssertTrue(edited.note!.contains("changes the global batch from 4 to 8"), edited.note!)
    }

    /// auto_scale_lr multiplies every rate by global batch / base_batch_size, as mmengine does.
    func testAutoScaleLRScalesTheSchedule() throws {
        let config = try ExperimentConfig.load(path: nil, overrides: ["auto_scale_lr.enable=true",
                                                                      "auto_scale_lr.base_batch_size=8"])
        let (plain, scaled) = (config.learningRates(), config.learningRates(globalBatch: 16))
        XCTAssertEqual(scaled[0], 2 * plain[0], accuracy: 1e-12)
        XCTAssertEqual(scaled[700], 2 * plain[700], accuracy: 1e-9 + 2 * 0.0001)   // PolyLR's eta_min is not scaled
        let off = try ExperimentConfig.load(path: nil, overrides: ["auto_scale_lr.base_batch_size=8"])
        XCTAssertEqual(off.learningRates(globalBatch: 16), off.learningRates())
    }
}
