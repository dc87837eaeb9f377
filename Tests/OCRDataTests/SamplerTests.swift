import OCRData
import XCTest

final class SamplerTests: XCTestCase {
    /// Over one step, the ranks' micro-batches cover the next global-batch samples of the stream exactly once, the
    /// stream is the epoch permutations back to back, and micro-step m of rank r holds group m·p + r.
    func testRanksShareEachStepsGlobalBatch() {
        for count in [1, 5, 7, 12] {
            let order = EpochPermutation(count: count, seed: 9)
            let stream = (0...(48 / count)).flatMap { order.order(epoch: $0) }   // two steps of the largest layout
            for (ranks, batch, accumulation) in [(1, 3, 1), (2, 2, 1), (3, 1, 2), (4, 2, 3)] {
                let layout = StepLayout(ranks: ranks, batchSize: batch, accumulation: accumulation)
                let schedules = (0..<ranks).map { TrainingSchedule(order: order, layout: layout, rank: $0) }
                for step in 0..<2 {
                    var positions: [Int] = []
                    for (r, schedule) in schedules.enumerated() {
                        for i in 0..<layout.perRank {
                            let t = schedule.ticket(at: step * layout.perRank + i)!
                            let (m, j) = i.quotientAndRemainder(dividingBy: batch)
                            XCTAssertEqual(t.position, step * layout.globalBatch + (m * ranks + r) * batch + j)
                            XCTAssertEqual(t.datasetIndex, stream[t.position], "p=\(ranks) n=\(count)")
                            XCTAssertEqual(t.epoch, t.position / count)
                            positions.append(t.position)
                        }
                    }
                    XCTAssertEqual(positions.sorted(), Array((step * layout.globalBatch)..<((step + 1) * layout.globalBatch)))
                }
            }
        }
    }

    func testPermutationDependsOnSeedAndEpochOnly() {
        let order = EpochPermutation(count: 50, seed: 4)
        XCTAssertEqual(Set(order.order(epoch: 3)), Set(0..<50))
        XCTAssertNotEqual(order.order(epoch: 3), order.order(epoch: 4))
        XCTAssertNotEqual(order.order(epoch: 3), EpochPermutation(count: 50, seed: 5).order(epoch: 3))
        XCTAssertNotEqual(order.order(epoch: 0), Array(0..<50))
        XCTAssertEqual(EpochPermutation(count: 5, seed: 4, shuffle: false).order(epoch: 2), [0, 1, 2, 3, 4])
    }

    func testEvaluationCountsEverySampleOnce() {
        for ranks in 1...4 {
            for count in [1, 2, 5, 8, 11] {
                var seen: [Int] = []
                for rank in 0..<ranks {
                    let schedule = EvaluationSchedule(count: count, ranks: ranks, rank: rank)
                    var position = 0
                    while let ticket = schedule.ticket(at: position) {
                        seen.append(ticket.datasetIndex)
                        position += 1
                    }
                    XCTAssertLessThanOrEqual(abs(position - count / ranks), 1)
                }
                XCTAssertEqual(seen.sorted(), Array(0..<count), "p=\(ranks) n=\(count)")
            }
        }
    }

    /// A schedule restarted from a saved state continues at the next global sample, mid-epoch or across an epoch
    /// boundary, on the same rank count or another one that splits the same global batch.
    func testTrainingStreamResumesOnAnyRankCount() {
        let order = EpochPermutation(count: 7, seed: 2)
        let global = { (layout: StepLayout, start: SamplerState, steps: Int) -> [Int] in
            (0..<layout.ranks).flatMap { r in
                let schedule = TrainingSchedule(order: order, layout: layout, rank: r, start: start)
                return (0..<(steps * layout.perRank)).map { schedule.ticket(at: $0)!.position }
            }.sorted()
        }
        let four = StepLayout(ranks: 4, batchSize: 1, accumulation: 1)
        let straight = TrainingSchedule(order: order, layout: four, rank: 0)
        for steps in [0, 1, 2, 3, 5] {
            let state = straight.state(afterDelivering: steps * four.perRank)
            XCTAssertEqual(state.epoch * 7 + state.consumed, steps * 4)
            for layout in [four, StepLayout(ranks: 2, batchSize: 2), StepLayout(ranks: 2, batchSize: 1, accumulation: 2),
                           StepLayout(ranks: 1, batchSize: 1, accumulation: 4)] {
                XCTAssertEqual(global(layout, state, 3), Array((steps * 4)..<(steps * 4 + 12)), "\(layout) after \(steps)")
            }
        }
        // A state written by the padded sampler of older versions (consumed past the epoch) starts the next epoch.
        XCTAssertEqual(SamplerState(epoch: 2, consumed: 8).absolute(count: 7), 21)
    }

    func testSamplerStateIsSerialisable() throws {
        let state = SamplerState(epoch: 3, consumed: 12)
        let json = try JSONEncoder().encode(state)
        XCTAssertEqual(try JSONDecoder().decode(SamplerState.self, from: json), state)
    }
}
