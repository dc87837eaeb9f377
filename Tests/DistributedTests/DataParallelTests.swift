import Foundation
import OCRTensor
import OCRTestSupport
import XCTest

/// The invariant that makes SyncBN + DDP correct, tested on the real binary under mpirun: p ranks on split batches
/// equal one process on the concatenated batch (every weight, BN running statistic and counter, each loss).
final class DataParallelTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = try makeTemporaryDirectory("ocr-ddp-dp")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// Runs ddp-check on `ranks` processes (0 = plainly, without mpirun) and returns its output directory.
    func train(_ name: String, ranks: Int, rankBatches: String, extra: [String] = [],
               file: StaticString = #filePath, line: UInt = #line) throws -> URL {
        let out = directory.appendingPathComponent(name)
        let args = ["ddp-check", "--out", out.path, "--rank-batches", rankBatches] + extra
        let result = ranks == 0 ? try runProcess(OCRDDPBinary.path, args) : try mpirun(ranks, [OCRDDPBinary.path] + args)
        XCTAssertFalse(result.timedOut, "\(name) hung", file: file, line: line)
        XCTAssertEqual(result.status, 0, "\(name) failed:\n\(result.stderr)", file: file, line: line)
        return out
    }

    func losses(_ run: URL) throws -> [[Double]] {
        let data = try Data(contentsOf: run.appendingPathComponent("report.json"))
        return (try JSONSerialization.jsonObject(with: data) as! [String: Any])["losses"] as! [[Double]]
    }

    /// Every tensor of `a` within `tolerance` relative of `b` (StateDictDifference), counters equal. Two ranks
    /// reproduce one process bit for bit; 4 ranks and accumulation sum the same gradients in another order (MPI's
    /// reduction tree, micro-batch order), ~1e-7 per step, which 3 steps through batch norms over 10 values
    /// (key/value projections) amplify to ≤ 1e-8 absolute.
    func assertSameState(_ a: URL, _ b: URL, file: String = "model.safetensors", tolerance: Double,
                         _ message: String, sourceFile: StaticString = #filePath, line: UInt = #line) throws {
        let difference = try StateDictDifference(a.appendingPathComponent(file).path, b.appendingPathComponent(file).path)
        XCTAssertEqual(difference.names.actual, difference.names.expected, message, file: sourceFile, line: line)
        XCTAssertEqual(difference.differingCounters, [], message, file: sourceFile, line: line)
        print("\(message): \(difference)")
        XCTAssertLessThanOrEqual(difference.worstRelative, tolerance, "\(message): \(difference)", file: sourceFile, line: line)
    }

    func assertSameLosses(_ a: URL, _ b: URL, tolerance: Double = 1e-5, _ message: String,
                          file: StaticString = #filePath, line: UInt = #line) throws {
        let (la, lb) = (try losses(a), try losses(b))
        XCTAssertEqual(la.count, lb.count, message, file: file, line: line)
        for (x, y) in zip(la.joined(), lb.joined()) {
            XCTAssertEqual(x, y, accuracy: tolerance * abs(y), "\(message): losses \(la) vs \(lb)", file: file, line: line)
        }
    }

    func testTwoRanksEqualOneProcessOnTheWholeBatch() throws {
        let single = try train("single2", ranks: 0, rankBatches: "2")
        let ddp = try train("ddp2", ranks: 2, rankBatches: "1,1")
        try assertSameState(ddp, single, tolerance: 1e-5, "2 ranks × 1 vs 1 × 2")
        try assertSameLosses(ddp, single, "2 ranks × 1 vs 1 × 2")
        // Many tiny buckets: 1 KiB first, then 4 KiB — hundreds of allreduces overlapping backward.
        let tiny = try train("ddp2tiny", ranks: 2, rankBatches: "1,1", extra: ["--first-bucket-kib", "1",
                                                                            "--bucket-kib", "4"])
        try assertSameState(tiny, single, tolerance: 1e-5, "tiny buckets vs 1 × 2")
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: tiny.appendingPathComponent("report.json")))
        XCTAssertGreaterThan((report as! [String: Any])["buckets"] as! Int, 20, "tiny buckets should mean many buckets")
        // The same with blocking all-reduces on the communication thread instead of MPI_Test polling.
        let threaded = try train("ddp2thread", ranks: 2, rankBatches: "1,1", extra: ["--overlap", "thread",
                                                                               "--first-bucket-kib", "1",
                                                                               "--bucket-kib", "4"])
        try assertSameState(threaded, single, tolerance: 1e-5, "communication-thread overlap vs 1 × 2")
    }

    func testFourRanksEqualOneProcessOnTheWholeBatch() throws {
        let single = try train("single4", ranks: 0, rankBatches: "4")
        let ddp = try train("ddp4", ranks: 4, rankBatches: "1,1,1,1")
        try assertSameState(ddp, single, tolerance: 1e-5, "4 ranks × 1 vs 1 × 4")
        try assertSameLosses(ddp, single, "4 ranks × 1 vs 1 × 4")
    }

    /// Accumulation over 2 micro-batches (communication on the last only) on 2 ranks equals one process
    /// accumulating the same 2 micro-batches of twice the size.
    func testGradientAccumulationEqualsOneProcess() throws {
        let single = try train("singleacc", ranks: 0, rankBatches: "2", extra: ["--accumulate", "2"])
        let ddp = try train("ddpacc", ranks: 2, rankBatches: "1,1", extra: ["--accumulate", "2", "--bucket-kib", "64"])
        // Not bit for bit by design: the process sums its micro-batches ((a + b) + c) + d, the ranks (a + c) + (b + d).
        // Three steps of training amplify that rounding; measured worst 2.4e-5 (a BN bias whose gradient is a
        // cancelling sum, |diff| 2.4e-7) since the Winograd transforms (a few ulps more per element than im2col;
        // 6e-6 before them).
        try assertSameState(ddp, single, tolerance: 5e-5, "accumulate 2: 2 ranks × 1 vs 1 × 2")
        try assertSameLosses(ddp, single, "accumulate 2")
    }

    /// Without sync BN each rank normalises with its own statistics: running statistics differ between ranks, but
    /// the averaged gradients keep every rank's weights bit-identical.
    func testWithoutSyncBNRunningStatsDifferButWeightsAgree() throws {
        let run = try train("nosync", ranks: 2, rankBatches: "1,1", extra: ["--no-sync-bn", "--dump-every-rank"])
        let r0 = try SafetensorsFile(path: run.appendingPathComponent("rank0.safetensors").path)
        let r1 = try SafetensorsFile(path: run.appendingPathComponent("rank1.safetensors").path)
        var differentStats = 0
        for name in r0.names {
            let (a, b) = (try r0.entry(name), try r1.entry(name))
            if name.hasSuffix("running_mean") || name.hasSuffix("running_var") {
                if a.bytes != b.bytes { differentStats += 1 }
            } else {
                XCTAssertEqual(a.bytes, b.bytes, "\(name) differs between ranks")
            }
        }
        XCTAssertGreaterThan(differentStats, 10, "running statistics should be per rank without sync BN")
        // With sync BN the same run keeps the statistics identical too.
        let synced = try train("sync", ranks: 2, rankBatches: "1,1", extra: ["--dump-every-rank"])
        XCTAssertEqual(try Data(contentsOf: synced.appendingPathComponent("rank0.safetensors")),
                       try Data(contentsOf: synced.appendingPathComponent("rank1.safetensors")))
    }

    /// Uneven shards (2 + 1) and an empty one (2 + 0) finish, and the ranks agree on the weights. With the empty
    /// rank the sync-BN statistics are those of rank 0's two images, so the result equals one process at batch 2
    /// up to DDP's 1/p gradient averaging — which the learning rate absorbs exactly when we double it.
    func testUnevenAndEmptyShardsDoNotHang() throws {
        _ = try train("uneven", ranks: 2, rankBatches: "2,1", extra: ["--dump-every-rank"])
        let empty = try train("empty", ranks: 2, rankBatches: "2,0",
                              extra: ["--dump-every-rank", "--lr", "0.1", "--weight-decay", "0.00025"])
        XCTAssertEqual(try Data(contentsOf: empty.appendingPathComponent("rank0.safetensors")),
                       try Data(contentsOf: empty.appendingPathComponent("rank1.safetensors")))
        let single = try train("single-empty", ranks: 0, rankBatches: "2",
                               extra: ["--lr", "0.05", "--weight-decay", "0.0005"])
        try assertSameLosses(empty, single, "2 + empty vs 1 × 2")
        try assertSameState(empty, single, tolerance: 1e-5, "2 + empty vs 1 × 2 (lr·½ gradient)")
    }

    func testParameterLayoutMismatchAbortsNamingTheKey() throws {
        let out = directory.appendingPathComponent("mismatch").path
        let common = ["ddp-check", "--out", out, "--rank-batches", "1,1", "--steps", "1"]
        let (result, report) = try mpirunWithRankFiles(
            ["-n", "1", OCRDDPBinary.path] + common + ["--classes", "5", ":", "-n", "1", OCRDDPBinary.path] + common
                + ["--classes", "6"],
            directory: directory.appendingPathComponent("mismatch-output"), timeout: 120)
        XCTAssertFalse(result.timedOut, "a layout mismatch must not hang")
        XCTAssertNotEqual(result.status, 0)
        // Rank 0, whose own layout is the reference, must name the key too (it may be the only rank that prints).
        XCTAssertTrue(report.contains("parameter layout mismatch") && report.contains("decode_head.0.conv_seg.weight"),
                      "rank 0's stderr: \(report); mpirun: \(result.stderr)")
    }

    /// Evaluation shards the split without padding (rank r takes r, r+p, …) and sums int64 counts: 2 ranks over 5
    /// samples (3 + 2) count exactly what one process counts.
    func testTwoRankEvaluationEqualsOneProcess() throws {
        let single = try train("eval1", ranks: 0, rankBatches: "2", extra: ["--eval-samples", "5"])
        let ddp = try train("eval2", ranks: 2, rankBatches: "1,1", extra: ["--eval-samples", "5"])
        func eval(_ run: URL) throws -> [String: Any] {
            let data = try Data(contentsOf: run.appendingPathComponent("report.json"))
            return (try JSONSerialization.jsonObject(with: data) as! [String: Any])["eval"] as! [String: Any]
        }
        let (a, b) = (try eval(single), try eval(ddp))
        XCTAssertEqual((a["labelled"] as! [Int]).reduce(0, +), 5 * 32 * 32, "every sample counted once")
        for key in ["intersect", "union", "labelled"] {
            XCTAssertEqual(a[key] as! [Int], b[key] as! [Int], key)
        }
    }

    /// The drift guard: a rank whose weights differ after a step stops every rank with a loud error.
    func testDivergedWeightsAreALoudError() throws {
        let out = directory.appendingPathComponent("drift").path
        let (result, report) = try mpirunWithRankFiles(
            ["-n", "2", OCRDDPBinary.path, "ddp-check", "--out", out, "--rank-batches", "1,1", "--perturb-rank", "1"],
            directory: directory.appendingPathComponent("drift-output"), timeout: 120)
        XCTAssertFalse(result.timedOut)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(report.contains("weights diverged across ranks at iteration 1"),
                      "rank 0's stderr: \(report); mpirun: \(result.stderr)")
    }

    /// One process without a launcher and `mpirun -n 1` take the same code path to bit-identical results.
    func testSingleProcessEqualsMpirunOneRank() throws {
        let plain = try train("plain", ranks: 0, rankBatches: "2")
        let one = try train("one", ranks: 1, rankBatches: "2")
        XCTAssertEqual(try Data(contentsOf: plain.appendingPathComponent("model.safetensors")),
                       try Data(contentsOf: one.appendingPathComponent("model.safetensors")))
        XCTAssertEqual(try losses(plain), try losses(one))
    }
}
