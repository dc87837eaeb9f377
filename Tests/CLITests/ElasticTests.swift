import Foundation
import OCRTensor
import OCRTestSupport
import XCTest

/// The run's recipe is its global batch, on whatever ranks it gets: `ocr-ddp train` under mpirun on 1, 2 and 4
/// ranks, with dropout on. Randomness is keyed by the global sample, accumulation stands in for ranks, and a
/// checkpoint resumes on another rank count with the same global batch and what batch norm normalises over.
final class ElasticTests: XCTestCase {
    static let dataDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("ocr-ddp-elastic-data-\(getpid())")
    var directory: URL!

    override class func setUp() {
        if !FileManager.default.fileExists(atPath: dataDirectory.appendingPathComponent("gtFine").path) {
            _ = try? runProcess(OCRDDPBinary.path, ["make-synthetic", dataDirectory.path, "--train", "12", "--val", "2"])
        }
    }

    override class func tearDown() { try? FileManager.default.removeItem(at: dataDirectory) }

    override func setUpWithError() throws { directory = try makeTemporaryDirectory("ocr-ddp-elastic") }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// The quick-start model (dropout 0.1 in both heads) at reduced width on 64×64 crops; 6 iterations, a checkpoint
    /// every 3. 12 training images: the 6 steps of global batch 4 cross two epoch boundaries.
    func options(_ extra: [String]) -> [String] {
        ["--cfg-options", "data.data_root=\(Self.dataDirectory.path)", "model.decode_head.0.channels=16",
         "model.decode_head.1.channels=16", "model.decode_head.1.ocr_channels=8",
         "data.train_pipeline=[{type: RandomCrop, crop_size: [64, 64]}, {type: RandomFlip, prob: 0.5}]",
         "train_cfg.max_iters=6", "train_cfg.val_interval=100", "checkpoint.interval=3", "log.interval=3",
         "data.num_workers=1"] + extra
    }

    @discardableResult
    func train(_ ranks: Int, _ name: String, _ extra: [String], resume: Bool = false, stopAt: Int? = nil,
               expectFailure: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let args = ["train", "--work-dir", directory.appendingPathComponent(name).path]
            + (resume ? ["--resume"] : []) + (stopAt.map { ["--stop-at-iter", "\($0)"] } ?? []) + options(extra)
        // One BLAS thread in every run, whatever the rank count: what varies here is the ranks. OpenBLAS's Haswell
        // sgemm (OPENBLAS_CORETYPE=Haswell, set on some machines) rounds differently on 2 threads than on 1, which
        // 3 steps amplify to 3e-5 (measured on Zen 5), where one process would otherwise take both cores.
        let blas = ["OPENBLAS_NUM_THREADS": "1"]
        let result = ranks == 0 ? try runProcess(OCRDDPBinary.path, args, environment: blas)
            : try mpirun(ranks, [OCRDDPBinary.path] + args, environment: blas)
        XCTAssertFalse(result.timedOut, "\(name) hung", file: file, line: line)
        if expectFailure {
            XCTAssertNotEqual(result.status, 0, "\(name) should fail", file: file, line: line)
        } else {
            XCTAssertEqual(result.status, 0, "\(name) failed:\n\(result.stderr)", file: file, line: line)
        }
        return result
    }

    func model(_ name: String, _ iteration: Int) -> String {
        directory.appendingPathComponent("\(name)/iter_\(iteration)/model.safetensors").path
    }

    /// Without sync BN the running statistics are rank 0's, which saw other images than one process did: compare the
    /// trained weights only.
    static func weightsOnly(_ name: String) -> Bool {
        !name.hasSuffix("running_mean") && !name.hasSuffix("running_var") && !name.hasSuffix("num_batches_tracked")
    }

    func assertSame(_ a: String, _ b: String, tolerance: Double = 1e-5, only include: @escaping (String) -> Bool = { _ in true },
                    _ message: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let difference = try StateDictDifference(a, b, only: include)
        print("\(message): \(difference)")
        XCTAssertEqual(difference.differingCounters, [], message, file: file, line: line)
        XCTAssertLessThanOrEqual(difference.worstRelative, tolerance, "\(message): \(difference)", file: file, line: line)
    }

    /// p ranks × b images ≡ 1 process × p·b with sync BN and dropout on: every weight, running statistic and
    /// counter after 3 steps, for p = 1, 2, 4.
    func testDropoutAndSyncBNDoNotDependOnTheRankCount() throws {
        try train(0, "one", ["data.batch_size=4", "train_cfg.max_iters=3"])
        try train(2, "two", ["data.batch_size=2", "train_cfg.max_iters=3"])
        try train(4, "four", ["data.batch_size=1", "train_cfg.max_iters=3"])
        try assertSame(model("two", 3), model("one", 3), "2 ranks × 2 vs 1 × 4")
        try assertSame(model("four", 3), model("one", 3), "4 ranks × 1 vs 1 × 4")
        // The masks matter: without dropout the weights move by far more than the tolerance.
        try train(0, "nodropout", ["data.batch_size=4", "train_cfg.max_iters=3", "model.decode_head.0.dropout_ratio=0",
                                   "model.decode_head.1.dropout_ratio=0"])
        XCTAssertGreaterThan(try StateDictDifference(model("nodropout", 3), model("one", 3)).worstRelative, 1e-3)
    }

    /// The same in bf16 (`--amp`), where each Winograd GEMM takes all of a rank's images at once: 2 ranks × 2 and
    /// 4 × 1 equal 1 process × 4, so a rank's images still each compute as alone.
    func testBF16DoesNotDependOnTheRankCount() throws {
        try XCTSkipUnless(BF16.hardwareSupported, "no bf16 dot product here: --amp runs fp32")
        try train(0, "one", ["data.batch_size=4", "train_cfg.max_iters=3", "--amp"])
        try train(2, "two", ["data.batch_size=2", "train_cfg.max_iters=3", "--amp"])
        try train(4, "four", ["data.batch_size=1", "train_cfg.max_iters=3", "--amp"])
        try assertSame(model("two", 3), model("one", 3), "bf16: 2 ranks × 2 vs 1 × 4")
        try assertSame(model("four", 3), model("one", 3), "bf16: 4 ranks × 1 vs 1 × 4")
    }

    /// optim_wrapper.accumulative_counts K: one process with K micro-batches of b equals K ranks × b with plain BN
    /// (batch norm sees b images in both), and differs from one process on a batch of K·b.
    func testAccumulationStandsInForRanks() throws {
        let plain = ["model.sync_bn=false", "data.batch_size=1", "train_cfg.max_iters=3"]
        try train(0, "accumulated", plain + ["optim_wrapper.accumulative_counts=2"])
        try train(2, "ranks", plain)
        try assertSame(model("accumulated", 3), model("ranks", 3), only: Self.weightsOnly, "1 × 1 × 2 accumulated vs 2 ranks × 1")
        // num_batches_tracked counts forward passes, as PyTorch's does: two per step with accumulation, one per rank.
        let counter = "backbone.stem.1.num_batches_tracked"
        XCTAssertEqual(try SafetensorsFile(path: model("accumulated", 3)).int64s(counter), [6])
        XCTAssertEqual(try SafetensorsFile(path: model("ranks", 3)).int64s(counter), [3])
        try train(0, "whole", ["model.sync_bn=false", "data.batch_size=2", "train_cfg.max_iters=3"])
        XCTAssertGreaterThan(try StateDictDifference(model("whole", 3), model("ranks", 3), only: Self.weightsOnly).worstRelative,
                             1e-3, "batch norm over 2 images is another computation than over 1")
    }

    /// 4 ranks × 1 to iteration 3, resumed on 2 ranks and on 1 process to 6, equals 4 ranks straight to 6. Sync BN:
    /// the resumed runs take 2 × 2 and 1 × 4 (running statistics equal too).
    func testResumeOnFewerRanksKeepsTheGlobalBatchWithSyncBN() throws {
        try assertResumesOnFewerRanks(["data.batch_size=1"], expect: ["2 rank(s) × batch 2 keeps its global batch 4 and batch norm over 4 images",
                                                                     "1 rank(s) × batch 4 keeps its global batch 4"],
                                      only: { _ in true })
    }

    /// The same with plain BN: the resumed runs take 2 × 1 × 2 and 1 × 1 × 4 accumulated (BN still over 1 image).
    func testResumeOnFewerRanksKeepsTheGlobalBatchWithPlainBN() throws {
        try assertResumesOnFewerRanks(["data.batch_size=1", "model.sync_bn=false"],
                                      expect: ["2 rank(s) × batch 1 × 2 accumulated keeps its global batch 4 and batch norm over 1 images",
                                               "1 rank(s) × batch 1 × 4 accumulated keeps its global batch 4"],
                                      only: Self.weightsOnly)
    }

    func assertResumesOnFewerRanks(_ config: [String], expect notes: [String], only include: @escaping (String) -> Bool,
                                   file: StaticString = #filePath, line: UInt = #line) throws {
        try train(4, "straight", config)
        try train(4, "first", config, stopAt: 3)
        XCTAssertFalse(FileManager.default.fileExists(atPath: model("first", 6)))
        for (ranks, note) in zip([2, 0], notes) {
            let name = "resumed\(ranks)"
            try FileManager.default.copyItem(at: directory.appendingPathComponent("first"),
                                             to: directory.appendingPathComponent(name))
            let result = try train(ranks, name, config, resume: true)
            XCTAssertTrue(result.stdout.contains(note), "\(name): \(result.stdout)", file: file, line: line)
            try assertSame(model(name, 6), model("straight", 6), only: include, "4 ranks to 3, then \(max(ranks, 1)) to 6",
                           file: file, line: line)
        }
    }

    /// A global batch the new rank count cannot split is a one-line error naming what would work; with
    /// auto_scale_lr the run goes on with the config's batch on the new ranks and the LR scaled to it.
    func testIndivisibleGlobalBatchNeedsAutoScaleLR() throws {
        let config = ["data.batch_size=3"]
        try train(0, "three", config, stopAt: 3)
        let refused = try train(2, "three", config, resume: true, expectFailure: true)
        let lines = refused.stderr.split(separator: "\n").filter { $0.hasPrefix("Error") }
        XCTAssertEqual(lines.count, 1, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("the checkpoint's global batch 3 (1 rank(s) × batch 3) cannot be split over "
                                              + "2 ranks: resume on 1, 3 ranks"), refused.stderr)
        let scaled = try train(2, "three", config + ["auto_scale_lr.enable=true", "auto_scale_lr.base_batch_size=3"],
                               resume: true)
        XCTAssertTrue(scaled.stdout.contains("2 rank(s) × batch 3 (global batch 6)") && scaled.stdout.contains("LR × 6/3"),
                      scaled.stdout)
    }

    /// The environment of Launch/elastic_train.sh on two "hosts", 127.0.0.2 and 127.0.0.3 (`loopbackHosts`); a host
    /// is down while DIRECTORY/down/HOST exists. A short kill grace: mpirun then ends a failed job within seconds.
    func twoHosts() throws -> [String: String] {
        let down = directory.appendingPathComponent("down"), hosts = directory.appendingPathComponent("hosts")
        try FileManager.default.createDirectory(at: down, withIntermediateDirectories: true)
        var env = try loopbackHosts(2, slots: 1, hostfile: hosts)
        env["HOSTFILE"] = hosts.path   // the script passes it to mpirun itself, the ranks it relaunches on too
        env["OMPI_MCA_orte_default_hostfile"] = nil
        env["HEALTH_CHECK"] = "\(sshStandIn) \"$HOST\" true"
        env["SSH_STANDIN_DOWN"] = down.path
        env["RESTART_DELAY"] = "0"
        env["KILL_GRACE"] = "2"
        env["OPENBLAS_NUM_THREADS"] = "1"   // as in `train`: the rank left alone would take both cores
        return env
    }

    /// Launch/elastic_train.sh across two "hosts" (127.0.0.2 and .3 through the project's ssh stand-in, Open MPI's
    /// TCP transport over loopback): mid-run the second host's rank is killed and the host stops answering. The
    /// script restarts on the first host with --resume, which keeps the global batch (1 rank × 2), and the final
    /// weights equal an uninterrupted 2-rank run's.
    func testElasticTrainFinishesOnTheHostThatIsLeft() throws {
        // Steps of about 0.6 s here (1024×512 inputs), so the kill lands mid-run.
        let config = ["data.batch_size=1", "checkpoint.interval=2",
                      "data.train_pipeline=[{type: Resize, scale: [1024, 512]}, {type: RandomFlip, prob: 0.5}]"]
        try train(2, "uninterrupted", config)

        let work = directory.appendingPathComponent("elastic")
        let script = try BackgroundProcess("/bin/bash", ["Launch/elastic_train.sh", "Configs/quickstart.yaml", "--work-dir",
                                                         work.path] + options(config), environment: try twoHosts())
        let checkpointed = script.waitUntil(timeout: 120) {
            FileManager.default.fileExists(atPath: work.appendingPathComponent("iter_2").path)
        }
        XCTAssertTrue(checkpointed, script.stderr)
        // The second host goes: it stops answering and its rank dies.
        FileManager.default.createFile(atPath: directory.appendingPathComponent("down/127.0.0.3").path, contents: nil)
        let rank1 = try XCTUnwrap(mpiRankProcess(1, commandContaining: work.path), "no rank 1 process")
        kill(rank1, SIGKILL)
        XCTAssertFalse(FileManager.default.fileExists(atPath: work.appendingPathComponent("iter_6").path),
                       "the run ended before the host failed")
        XCTAssertEqual(script.wait(timeout: 240), 0, script.stderr)
        XCTAssertTrue(script.stderr.contains("host 127.0.0.3 does not answer")
                      && script.stderr.contains("launching 1 rank(s) on 127.0.0.2"), script.stderr)
        XCTAssertTrue(script.stdout.contains("1 rank(s) × batch 2 keeps its global batch 2"), script.stdout)
        try assertSame(work.appendingPathComponent("iter_6/model.safetensors").path, model("uninterrupted", 6),
                       "killed host, resumed on 1, vs 2 ranks straight")
    }

    /// An error ocr-ddp reports itself (here a config typo) is not retried: the script ends with its status.
    func testElasticTrainDoesNotRetryABadConfig() throws {
        let r = try runProcess("/bin/bash", ["Launch/elastic_train.sh", "Configs/quickstart.yaml", "--work-dir",
                                             directory.appendingPathComponent("bad").path, "--cfg-options", "train_cfg.max_iterz=3"],
                               environment: try twoHosts())
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("train_cfg.max_iterz") && r.stderr.contains("with every host answering; not restarting"),
                      r.stderr)
        XCTAssertEqual(r.stderr.components(separatedBy: "elastic_train.sh: launching").count, 2, "launched once: \(r.stderr)")
    }
}
