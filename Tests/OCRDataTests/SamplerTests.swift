import OCRData
import XCTest

final class SamplerTests: XCTestCase {
    func testRanksCoverTheEpochWithEqualCounts() {
        for ranks in 1...4 {
            for count in [1, 3, 5, 7, 8, 12, 13] {
                let samplers = (0..<ranks).map { DistributedSampler(count: count, ranks: ranks, rank: $0, seed: 9) }
                for epoch in 0..<3 {
                    let shards = samplers.map { $0.indices(epoch: epoch) }
                    let perRank = (count + ranks - 1) / ranks
                    XCTAssertEqual(Set(shards.map(\.count)), [perRank], "p=\(ranks) n=\(count): unequal shards")
                    let all = shards.flatMap { $0 }
                    XCTAssertEqual(Set(all), Set(0..<count), "p=\(ranks) n=\(count): epoch not covered")
                    XCTAssertEqual(all.count, perRank * ranks)
                    // Padding repeats the head of the permutation: the padded order's tail is its start.
                    let order = samplers[0].epochOrder(epoch)
                    XCTAssertEqual(Set(order.prefix(count)), Set(0..<count), "the first n entries are a permutation")
                    for i in count..<order.count { XCTAssertEqual(order[i], order[i % count]) }
                    // Rank r takes entries r, r+p, …
                    for r in 0..<ranks { XCTAssertEqual(shards[r], stride(from: r, to: order.count, by: ranks).map { order[$0] }) }
                }
            }
        }
    }

    func testPermutationDependsOnSeedAndEpochOnly() {
        let sampler = DistributedSampler(count: 50, ranks: 1, rank: 0, seed: 4)
        XCTAssertEqual(sampler.epochOrder(3), DistributedSampler(count: 50, ranks: 2, rank: 1, seed: 4).epochOrder(3))
        XCTAssertNotEqual(sampler.epochOrder(3), sampler.epochOrder(4))
        XCTAssertNotEqual(sampler.epochOrder(3), DistributedSampler(count: 50, ranks: 1, rank: 0, seed: 5).epochOrder(3))
        XCTAssertNotEqual(sampler.epochOrder(0), Array(0..<50))
        XCTAssertEqual(DistributedSampler(count: 5, ranks: 1, rank: 0, seed: 4, shuffle: false).epochOrder(2), [0, 1, 2, 3, 4])
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

    /// The stream runs epoch after epoch; a schedule restarted from a saved state continues with exactly the
    /// tickets the uninterrupted one would have produced, mid-epoch or across an epoch boundary.
    func testTrainingStreamResumesMidEpoch() {
        for ranks in [1, 3] {
            let sampler = DistributedSampler(count: 7, ranks: ranks, rank: ranks - 1, seed: 2)
            let stream = TrainingSchedule(sampler: sampler)
            let tickets = (0..<40).map { stream.ticket(at: $0)! }
            XCTAssertEqual(tickets.prefix(sampler.perRank).map(\.datasetIndex), sampler.indices(epoch: 0))
            XCTAssertEqual(Array(tickets[sampler.perRank..<2 * sampler.perRank].map(\.datasetIndex)), sampler.indices(epoch: 1))
            XCTAssertEqual(tickets[2 * sampler.perRank].epoch, 2)
            for delivered in [0, 1, 2, 3, 5, 8, 13] {
                let state = stream.state(afterDelivering: delivered)
                XCTAssertEqual(state.consumed % ranks, 0)
                let resumed = TrainingSchedule(sampler: sampler, start: state)
                for k in 0..<10 {
                    XCTAssertEqual(resumed.ticket(at: k), tickets[delivered + k], "p=\(ranks), resumed after \(delivered)")
                }
            }
        }
    }

    func testSamplerStateIsSerialisable() throws {
        let state = SamplerState(epoch: 3, consumed: 12)
        let json = try JSONEncoder().encode(state)
        XCTAssertEqual(try JSONDecoder().decode(SamplerState.self, from: json), state)
    }
}
