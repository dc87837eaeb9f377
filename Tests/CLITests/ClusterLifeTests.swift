import Foundation
import OCRTensor
import OCRTestSupport
import XCTest

/// What a shared cluster does to a job, done to the real binary under its launchers: stop signals during long
/// steps (plain process, Launch/dist_train.sh, bare mpirun), a stopped rank (the watchdog), kill -9 during
/// checkpoint writes, a full disk, a corrupt val image, a moved work dir, ranks that see different data.
final class ClusterLifeTests: XCTestCase {
    static let dataDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("ocr-ddp-cluster-data-\(getpid())")
    var directory: URL!
    var data: String { Self.dataDirectory.path }

    override class func setUp() {
        if !FileManager.default.fileExists(atPath: dataDirectory.appendingPathComponent("gtFine").path) {
            _ = try? runProcess(OCRDDPBinary.path, ["make-synthetic", dataDirectory.path, "--train", "16", "--val", "6"])
        }
    }

    override class func tearDown() { try? FileManager.default.removeItem(at: dataDirectory) }

    override func setUpWithError() throws { directory = try makeTemporaryDirectory("ocr-ddp-cluster") }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// Whether WORK_DIR/log.jsonl has a record of `iteration` (any, when nil): the console's lines are for people,
    /// tools read the file.
    func logged(_ work: String, iteration: Int? = nil) -> Bool {
        guard let text = try? String(contentsOfFile: "\(work)/log.jsonl", encoding: .utf8) else { return false }
        return text.contains(iteration.map { "\"iter\":\($0)," } ?? "\"iter\":")
    }

    /// The quick-start config shrunk so a step takes milliseconds, on `root`.
    func small(root: String? = nil) -> [String] {
        ["--cfg-options", "data.data_root=\(root ?? data)", "model.backbone.base_channels=8",
         "model.decode_head.0.channels=16", "model.decode_head.1.channels=16", "model.decode_head.1.ocr_channels=8",
         "data.batch_size=1", "train_cfg.val_interval=100", "checkpoint.interval=100", "log.interval=1",
         "data.num_workers=1"]
    }

    /// Wide enough that a step of 2 ranks on 2 cores takes well over mpirun's default 1-s kill grace.
    var longSteps: [String] {
        ["model.backbone.base_channels=48", "model.decode_head.0.channels=96", "model.decode_head.1.channels=96"]
    }

    var mpirunPrefix: [String] { ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "2"] }

    func train(_ ranks: Int, _ args: [String], timeout: TimeInterval = 240) throws -> ProcessResult {
        let command = [OCRDDPBinary.path, "train"] + args
        let r = ranks == 0 ? try runProcess(command[0], Array(command.dropFirst()), timeout: timeout)
            : try mpirun(ranks, command, timeout: timeout)
        XCTAssertFalse(r.timedOut, "\(args) hung")
        return r
    }

    /// A copy of the shared dataset to damage, and the PNGs under `folder` of it (sorted, relative to the folder).
    func datasetCopy(_ name: String, listing folder: String) throws -> (root: String, files: [String]) {
        let root = path(name)
        try FileManager.default.copyItem(atPath: data, toPath: root)
        let files = try FileManager.default.subpathsOfDirectory(atPath: "\(root)/\(folder)").filter { $0.hasSuffix(".png") }
        return (root, files.sorted())
    }

    func pointer(_ work: String, _ file: String = "last_checkpoint") throws -> String {
        try String(contentsOfFile: "\(work)/\(file)", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// N of every iter_N checkpoint in `work` with its trainer state, ascending.
    func savedIterations(_ work: String) throws -> [Int] {
        try FileManager.default.contentsOfDirectory(atPath: work).compactMap { name -> Int? in
            guard name.hasPrefix("iter_"), FileManager.default.fileExists(atPath: "\(work)/\(name)/trainer_state.json")
            else { return nil }
            return Int(name.dropFirst(5))
        }.sorted()
    }

    func iteration(ofCheckpoint checkpoint: String) throws -> Int {
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(checkpoint)/trainer_state.json")))
        return (state as! [String: Any])["iteration"] as! Int
    }

    func assertSameWeights(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        for name in ["model.safetensors", "optimizer.safetensors"] {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(a)/\(name)")),
                           try Data(contentsOf: URL(fileURLWithPath: "\(b)/\(name)")),
                           "\(name): an interrupted and resumed run must give the bytes of an uninterrupted one",
                           file: file, line: line)
        }
    }

    /// Launch/dist_train.sh during steps longer than mpirun's kill grace: SIGTERM to the script ends the job with
    /// exit 0 and a checkpoint of a completed iteration, and --resume continues to the bytes of an uninterrupted run.
    func testSigtermToDistTrainDuringLongStepsResumesExactly() throws {
        let args = small() + longSteps + ["train_cfg.max_iters=3"]
        let straight = path("straight"), split = path("split")
        XCTAssertEqual(try train(2, ["--work-dir", straight] + args).status, 0)
        let script = try BackgroundProcess("/bin/bash", ["Launch/dist_train.sh", "Configs/quickstart.yaml", "2",
                                                         "--work-dir", split] + args,
                                           environment: ["OCR_DDP": OCRDDPBinary.path])
        XCTAssertTrue(script.waitUntil(timeout: 120) { logged(split, iteration: 1) }, script.stderr)
        script.signal(SIGTERM)
        let status = script.wait(timeout: 120)
        XCTAssertEqual(status, 0, script.stderr)
        XCTAssertTrue(script.stdout.contains("stop requested (SIGUSR1)"), script.stdout)
        let stoppedAt = try iteration(ofCheckpoint: "\(split)/\(try pointer(split))")
        XCTAssertTrue((1...3).contains(stoppedAt))
        let resumed = try train(2, ["--work-dir", split, "--resume"] + args)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        try assertSameWeights("\(straight)/iter_3", "\(split)/iter_3")
    }

    /// SIGUSR1 to bare mpirun (which forwards it) during long steps: checkpoint, exit 0; and the ranks warned at
    /// the start that mpirun's 1-s kill grace is too short for a SIGTERM.
    func testSigusr1ToBareMpirunCheckpointsAndExitsZero() throws {
        let work = path("usr1")
        let job = try BackgroundProcess("/usr/bin/env", mpirunPrefix + [OCRDDPBinary.path, "train", "--work-dir", work]
                                        + small() + longSteps + ["train_cfg.max_iters=1000"],
                                        environment: ["OMPI_MCA_odls_base_sigkill_timeout": "1"])
        XCTAssertTrue(job.waitUntil(timeout: 120) { logged(work, iteration: 2) }, job.stderr)
        job.signal(SIGUSR1)
        XCTAssertEqual(job.wait(timeout: 120), 0, job.stderr)
        let stoppedAt = try iteration(ofCheckpoint: "\(work)/\(try pointer(work))")
        XCTAssertGreaterThanOrEqual(stoppedAt, 2)
        XCTAssertTrue(job.stderr.contains("odls_base_sigkill_timeout") && job.stderr.contains("dist_train.sh"),
                      "warns about the short kill grace: \(job.stderr)")
    }

    /// Ctrl-C (SIGINT) to a plain process finishes the step, checkpoints and exits 0.
    func testSigintToPlainProcessCheckpointsAndExitsZero() throws {
        let work = path("int")
        let job = try BackgroundProcess(OCRDDPBinary.path, ["train", "--work-dir", work] + small() + ["train_cfg.max_iters=100000"])
        XCTAssertTrue(job.waitUntil(timeout: 120) { logged(work, iteration: 2) })
        job.signal(SIGINT)
        XCTAssertEqual(job.wait(timeout: 60), 0, job.stderr)
        XCTAssertTrue(job.stdout.contains("stop requested (SIGINT)"), job.stdout)
        XCTAssertGreaterThanOrEqual(try iteration(ofCheckpoint: "\(work)/\(try pointer(work))"), 2)
    }

    /// A stopped rank (SIGSTOP) with env_cfg.dist_cfg.timeout 20: the job ends non-zero within 60 s of the stop with
    /// a message naming the iteration, the collective and the rank that did not arrive; the last checkpoint resumes.
    /// Under MPI_THREAD_FUNNELED (the default polling overlap) the watchdog runs in the ranks' waits.
    func testWatchdogEndsAJobWithAStoppedRank() throws {
        let (work, args) = try stopRankAndExpectTheWatchdog("stall", overlap: "polling")
        let resumed = try train(2, ["--work-dir", work, "--resume"] + args + ["train_cfg.max_iters=6"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stdout.contains("resumed from \(work)/iter_"), resumed.stdout)
    }

    /// The same with the thread overlap (MPI_THREAD_MULTIPLE), where the watchdog has a thread of its own.
    func testWatchdogThreadEndsAJobWithAStoppedRank() throws {
        _ = try stopRankAndExpectTheWatchdog("stall-thread", overlap: "thread")
    }

    func stopRankAndExpectTheWatchdog(_ name: String, overlap: String) throws -> (work: String, args: [String]) {
        let work = path(name)
        let args = small() + ["checkpoint.interval=2", "env_cfg.dist_cfg.timeout=20", "model_wrapper_cfg.overlap=\(overlap)"]
        let job = try BackgroundProcess("/usr/bin/env", mpirunPrefix + [OCRDDPBinary.path, "train", "--work-dir", work]
                                        + args + ["train_cfg.max_iters=100000"])
        XCTAssertTrue(job.waitUntil(timeout: 120) { logged(work, iteration: 3) }, job.stderr)
        let rank1 = try XCTUnwrap(mpiRankProcess(1, commandContaining: work))
        kill(rank1, SIGSTOP)
        let stopped = Date()
        let status = job.wait(timeout: 90)
        XCTAssertLessThan(Date().timeIntervalSince(stopped), 60, "the job must end within 60 s of the stop")
        XCTAssertNotNil(status)
        XCTAssertNotEqual(status, 0)
        let line = job.stderr.split(separator: "\n").first { $0.contains("watchdog") }.map(String.init) ?? ""
        XCTAssertTrue(line.contains("rank 1 did not arrive") && line.contains("at iteration")
                      && line.contains("env_cfg.dist_cfg.timeout 20 s"), "\(overlap): \(job.stderr)")
        return (work, args)
    }

    /// kill -9 of the writer at random moments of a run that checkpoints every iteration: afterwards the newest
    /// checkpoint `last_checkpoint` names is always complete and loadable, and the next start removes what the
    /// killed saves left behind.
    func testKillDuringCheckpointWritesAlwaysLeavesACompleteOne() throws {
        let work = path("kill")
        let args = small() + ["checkpoint.interval=1", "checkpoint.max_keep=2", "train_cfg.max_iters=100000"]
        var generator = SystemRandomNumberGenerator()
        var killed = 0
        for trial in 0..<12 {
            let job = try BackgroundProcess(OCRDDPBinary.path, ["train", "--work-dir", work] + (trial > 0 ? ["--resume"] : [])
                                            + args)
            XCTAssertTrue(job.waitUntil(timeout: 60) {
                logged(work) && FileManager.default.fileExists(atPath: "\(work)/last_checkpoint")
            }, job.stderr)
            Thread.sleep(forTimeInterval: Double.random(in: 0...0.6, using: &generator))
            job.signal(SIGKILL)
            _ = job.wait(timeout: 30)
            killed += 1
            let checkpoint = "\(work)/\(try pointer(work))"
            for name in ["model.safetensors", "optimizer.safetensors"] {
                XCTAssertNoThrow(try SafetensorsFile(path: "\(checkpoint)/\(name)"), "trial \(trial): \(checkpoint)/\(name)")
            }
            XCTAssertNoThrow(try iteration(ofCheckpoint: checkpoint), "trial \(trial)")
        }
        XCTAssertEqual(killed, 12)
        let last = try iteration(ofCheckpoint: "\(work)/\(try pointer(work))")
        let resumed = try train(0, ["--work-dir", work, "--resume"] + args.dropLast() + ["train_cfg.max_iters=\(last + 1)"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: work).filter { $0.contains(".tmp-") || $0.contains(".old-") }
        XCTAssertEqual(leftovers, [], "the next start removes the staging of killed saves")
    }

    /// A fresh run in a work dir that holds a longer earlier run's checkpoints prunes only its own: it keeps its
    /// newest `max_keep`, finishes with exit 0, and the earlier run's later checkpoints are still there.
    func testFreshRunInAUsedWorkDirPrunesOnlyItsOwnCheckpoints() throws {
        let work = path("reused")
        // Evaluation only at the end, so the best checkpoint (never pruned) is each run's last one.
        let args = ["--work-dir", work] + small() + ["checkpoint.interval=2", "checkpoint.max_keep=2"]
        let earlier = try train(0, args + ["train_cfg.max_iters=10"])
        XCTAssertEqual(earlier.status, 0, earlier.stderr)
        XCTAssertEqual(try savedIterations(work), [8, 10])
        let fresh = try train(0, args + ["train_cfg.max_iters=6"])
        XCTAssertEqual(fresh.status, 0, fresh.stderr)
        let kept = try savedIterations(work)
        XCTAssertTrue(kept.contains(4) && kept.contains(6), "the fresh run's newest two: \(kept)")
        XCTAssertFalse(kept.contains(2), "the fresh run's oldest is pruned: \(kept)")
        XCTAssertTrue(kept.contains(8) && kept.contains(10), "the earlier run's are left alone: \(kept)")
        XCTAssertEqual(try pointer(work), "iter_6")
    }

    /// A work dir moved after training resumes from its own checkpoints (pointers are relative).
    func testMovedWorkDirResumesFromItsOwnFiles() throws {
        let before = path("before"), after = path("after")
        XCTAssertEqual(try train(0, ["--work-dir", before] + small() + ["train_cfg.max_iters=2"]).status, 0)
        XCTAssertEqual(try pointer(before), "iter_2")
        try FileManager.default.moveItem(atPath: before, toPath: after)
        let r = try train(0, ["--work-dir", after, "--resume"] + small() + ["train_cfg.max_iters=3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("resumed from \(after)/iter_2"), r.stdout)
    }

    /// The interval checkpoint is written before evaluation; a corrupt val image then stops training with one line
    /// naming the file (or, with train_cfg.on_val_error: continue, is reported and training goes on), and the
    /// best evaluated checkpoint is marked by `best_checkpoint` and its trainer state.
    func testCheckpointComesBeforeEvaluationAndSurvivesAFailedOne() throws {
        let (root, valImages) = try datasetCopy("data", listing: "leftImg8bit/val")
        let corrupt = "\(root)/leftImg8bit/val/\(valImages[1])"
        let args = small(root: root) + ["train_cfg.val_interval=2", "checkpoint.interval=2", "train_cfg.max_iters=4"]

        let good = path("good")
        let ok = try train(2, ["--work-dir", good] + small() + ["train_cfg.val_interval=2", "checkpoint.interval=2",
                                                                 "train_cfg.max_iters=4"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        let best = try pointer(good, "best_checkpoint")
        let bestState = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(good)/\(best)/trainer_state.json"))) as! [String: Any]
        XCTAssertEqual("iter_\(bestState["bestIteration"] as! Int)", best, "the best checkpoint's state names itself best")

        try Data("not a png".utf8).write(to: URL(fileURLWithPath: corrupt))
        let stop = path("stop")
        let failed = try train(0, ["--work-dir", stop] + args)
        XCTAssertNotEqual(failed.status, 0)
        let lines = failed.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, failed.stderr)
        XCTAssertTrue(failed.stderr.contains(corrupt) && failed.stderr.contains("evaluation at iteration 2"), failed.stderr)
        XCTAssertEqual(try pointer(stop), "iter_2", "the interval checkpoint was written before evaluation")

        let keepGoing = path("continue")
        let continued = try train(2, ["--work-dir", keepGoing] + args + ["train_cfg.on_val_error=continue"])
        XCTAssertEqual(continued.status, 0, continued.stderr)
        XCTAssertTrue(continued.stderr.contains(corrupt) && continued.stderr.contains("continuing"), continued.stderr)
        XCTAssertEqual(try pointer(keepGoing), "iter_4")
    }

    /// A stop request during evaluation is honoured within an image: the job ends with the checkpoint written
    /// before evaluation and no evaluation record.
    func testStopDuringEvaluationEndsPromptly() throws {
        let work = path("evalstop")
        // Evaluation at 4 scales with flips on a wide model: seconds per image, so the signal lands inside it.
        let job = try BackgroundProcess(OCRDDPBinary.path, ["train", "--work-dir", work] + small() + longSteps
                                        + ["train_cfg.max_iters=4", "train_cfg.val_interval=1", "checkpoint.interval=1",
                                           "model.test_cfg.flip=true", "model.test_cfg.scales=[1.0, 1.5, 2.0, 2.5]"])
        XCTAssertTrue(job.waitUntil(timeout: 120) { FileManager.default.fileExists(atPath: "\(work)/iter_1/trainer_state.json") })
        Thread.sleep(forTimeInterval: 0.5)
        job.signal(SIGTERM)
        let signalled = Date()
        XCTAssertEqual(job.wait(timeout: 60), 0, job.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(signalled), 60, "honoured within an image, not after the whole split")
        XCTAssertTrue(job.stdout.contains("during evaluation"), job.stdout)
        XCTAssertEqual(try pointer(work), "iter_1")
        let log = try String(contentsOfFile: "\(work)/log.jsonl", encoding: .utf8)
        XCTAssertFalse(log.contains("mIoU"), "the interrupted evaluation records nothing")
        // The resumed run does the evaluation the stop cut short (at one scale here, to be quick) before training on.
        let resumed = try train(0, ["--work-dir", work, "--resume"] + small() + longSteps
                                + ["train_cfg.max_iters=1", "train_cfg.val_interval=1", "checkpoint.interval=1"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stdout.contains("evaluating iteration 1 first"), resumed.stdout)
        let logged = try String(contentsOfFile: "\(work)/log.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(logged.filter { $0.contains("\"mIoU\"") && $0.contains("\"iter\":1") }.count, 1)
        XCTAssertEqual(try pointer(work, "best_checkpoint"), "iter_1")
    }

    /// A full file system (a 2 MiB tmpfs) during a checkpoint: one line naming the path, non-zero exit, no trap, the
    /// earlier checkpoint intact and no partial one left behind.
    func testFullDiskGivesOneLineErrorAndKeepsEarlierCheckpoints() throws {
        let mountPoint = path("small-disk")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mounted = try runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", mountPoint])
        try XCTSkipIf(mounted.status != 0, "cannot mount a tmpfs here (\(mounted.stderr.trimmingCharacters(in: .whitespacesAndNewlines))); needs root")
        defer { _ = try? runProcess("/bin/umount", [mountPoint]) }
        let work = "\(mountPoint)/work"
        XCTAssertEqual(try train(0, ["--work-dir", work, "--stop-at-iter", "2"] + small() + ["train_cfg.max_iters=4"]).status, 0)
        let checkpointBytes = try FileManager.default.attributesOfItem(atPath: "\(work)/iter_2/model.safetensors")[.size] as! Int
        // Leave room for log lines but not for another checkpoint.
        let free = try (FileManager.default.attributesOfFileSystem(forPath: mountPoint)[.systemFreeSize] as! NSNumber).intValue
        XCTAssertGreaterThan(free, checkpointBytes + 65536, "the tmpfs must hold a second checkpoint's worth of filler")
        FileManager.default.createFile(atPath: "\(mountPoint)/filler", contents: Data(count: free - checkpointBytes / 2))
        let r = try train(0, ["--work-dir", work, "--resume"] + small() + ["train_cfg.max_iters=4"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertFalse(r.stderr.contains("Fatal error"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains(work) && r.stderr.contains("No space left"), r.stderr)
        XCTAssertEqual(try pointer(work), "iter_2")
        XCTAssertNoThrow(try SafetensorsFile(path: "\(work)/iter_2/model.safetensors"))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: work).filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers, [])

        // A log line that cannot be written (log.jsonl on a device that is always full).
        try FileManager.default.removeItem(atPath: "\(mountPoint)/filler")
        try FileManager.default.removeItem(atPath: "\(work)/log.jsonl")
        try FileManager.default.createSymbolicLink(atPath: "\(work)/log.jsonl", withDestinationPath: "/dev/full")
        let logged = try train(0, ["--work-dir", work, "--resume"] + small() + ["train_cfg.max_iters=4"])
        XCTAssertNotEqual(logged.status, 0)
        XCTAssertEqual(logged.stderr.split(separator: "\n").count, 1, logged.stderr)
        XCTAssertTrue(logged.stderr.contains("\(work)/log.jsonl") && logged.stderr.contains("No space left"), logged.stderr)
        XCTAssertEqual(try pointer(work), "iter_2")
    }

    /// Without sync BN each rank's running statistics differ; evaluation and the checkpoint use rank 0's, so the
    /// mIoU reported in training equals `ocr-ddp eval` of the saved checkpoint in one process.
    func testWithoutSyncBNTrainingEvaluatesTheModelItSaves() throws {
        let work = path("nosync")
        let r = try train(2, ["--work-dir", work] + small() + ["model.sync_bn=false", "train_cfg.max_iters=4",
                                                               "train_cfg.val_interval=4"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let logged = try String(contentsOfFile: "\(work)/log.jsonl", encoding: .utf8).split(separator: "\n")
            .first { $0.contains("mIoU") }.map(String.init) ?? ""
        let config = path("nosync.yaml")
        try FileManager.default.copyItem(atPath: "\(work)/config.yaml", toPath: config)
        let evaluated = try runProcess(OCRDDPBinary.path, ["eval", config, "\(work)/iter_4"])
        XCTAssertEqual(evaluated.status, 0, evaluated.stderr)
        let json = { (line: String) in try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any] }
        var trained = try json(logged)
        trained["iter"] = nil
        trained["rss_mb"] = nil
        let scored = try json(evaluated.stdout.split(separator: "\n").last.map(String.init) ?? "")
        XCTAssertEqual(NSDictionary(dictionary: trained), NSDictionary(dictionary: scored))
    }

    /// Launch/slurm_train.sh under a real one-node Slurm (Tests/Cluster/local-slurm.sh): scancel of an srun job
    /// during a step ends it 0 with a checkpoint that --resume continues; a REQUEUE=1 batch job with a one-minute
    /// limit checkpoints on SIGUSR1, requeues itself and completes. Skipped where Slurm cannot be started.
    func testSlurmTrainScriptStopsAndRequeuesUnderSlurm() throws {
        let script = Fixtures.directory.deletingLastPathComponent().appendingPathComponent("Cluster/slurm_preemption.sh").path
        let r = try runProcess("/bin/bash", [script], environment: ["OCR_DDP": OCRDDPBinary.path], timeout: 900)
        try XCTSkipIf(r.stdout.contains("SKIP:"), r.stdout)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains(" 0 failed"), r.stdout)
    }

    /// Node-local dataset copies that differ (one label file changed on rank 1's copy): every rank stops with one
    /// line naming the file; and `eval` reads the checkpoint on rank 0 only (rank 1 is given a path that does not
    /// exist).
    func testRanksCompareTheirDatasetAndOnlyRankZeroReadsTheCheckpoint() throws {
        let (copy, labels) = try datasetCopy("copy", listing: "gtFine/train")
        let changed = "gtFine/train/\(labels[3])"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: "\(copy)/\(changed)"))
        handle.seekToEndOfFile()
        handle.write(Data([0]))
        try handle.close()
        let work = path("mismatch")
        let mpmd = ["mpirun", "--allow-run-as-root", "--oversubscribe",
                    "-n", "1", OCRDDPBinary.path, "train", "--work-dir", work] + small()
            + [":", "-n", "1", OCRDDPBinary.path, "train", "--work-dir", work] + small(root: copy)
        let r = try runProcess("/usr/bin/env", mpmd, timeout: 120)
        XCTAssertNotEqual(r.status, 0)
        // Counted by the message, not by lines starting "Error": mpirun may write its own abort notice into the
        // middle of a rank's forwarded line (seen once in CI: "E", then mpirun's banner, then "rror: rank 1: …").
        let mismatch = "differs across ranks"
        XCTAssertEqual(r.stderr.components(separatedBy: mismatch).count - 1, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("\(changed): \(mismatch)"), r.stderr)

        XCTAssertEqual(try train(0, ["--work-dir", work] + small() + ["train_cfg.max_iters=1"]).status, 0)
        let config = path("eval.yaml")
        try FileManager.default.copyItem(atPath: "\(work)/config.yaml", toPath: config)
        let eval = try runProcess("/usr/bin/env", ["mpirun", "--allow-run-as-root", "--oversubscribe",
                                                   "-n", "1", OCRDDPBinary.path, "eval", config, "\(work)/iter_1", ":",
                                                   "-n", "1", OCRDDPBinary.path, "eval", config, "/nonexistent/iter_1"],
                                  timeout: 120)
        XCTAssertEqual(eval.status, 0, eval.stderr)
        XCTAssertTrue(eval.stdout.contains("\"mIoU\":"), eval.stdout)
    }

    /// Launch/simcluster.sh: two simulated hosts (network namespaces, veths on a bridge, both directions of each link
    /// shaped to 1 Gbit/s by tc) train on 2 ranks through mpirun's TCP transport, one rank per namespace; the
    /// namespaces and links are gone afterwards. Skipped where root network namespaces are not available.
    func testSimulatedClusterTrainsOverShapedLinks() throws {
        let work = path("sim")
        let r = try runProcess("/bin/bash", ["Launch/simcluster.sh", "2", "1gbit", "mpirun", "-n", "2", OCRDDPBinary.path,
                                             "train", "--work-dir", work] + small() + ["train_cfg.max_iters=3"],
                               environment: ["SIMCLUSTER_PREFIX": "ocrtest"])
        try XCTSkipIf(r.status == 77, r.stderr)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(logged(work, iteration: 3) && r.stdout.contains("2 rank(s) × batch 1"), r.stdout)
        XCTAssertTrue(r.stderr.contains("simcluster: 2 host(s) at 10.77.0.1-2, links shaped to 1gbit"), r.stderr)
        let left = try runProcess("/usr/sbin/ip", ["-o", "link", "show"]).stdout + (try runProcess("/usr/sbin/ip", ["netns", "list"]).stdout)
        XCTAssertFalse(left.contains("ocrtest"), "left behind:\n\(left)")
    }
}
