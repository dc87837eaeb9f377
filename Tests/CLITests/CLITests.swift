import Foundation
import OCRData
import OCRTensor
import OCRTestSupport
import XCTest

/// The commands as users run them, on the real binary: exact resume (1 and 2 ranks), evaluation on 2 ranks equal
/// to 1, and one-line errors for bad input.
final class CLITests: XCTestCase {
    static var dataDirectory: URL = FileManager.default.temporaryDirectory.appendingPathComponent("ocr-ddp-cli-data-\(getpid())")
    var directory: URL!

    /// A small synthetic dataset (16 train, 5 val) shared by the tests of this class.
    override class func setUp() {
        if !FileManager.default.fileExists(atPath: dataDirectory.appendingPathComponent("gtFine").path) {
            _ = try? runProcess(OCRDDPBinary.path, ["make-synthetic", dataDirectory.path, "--train", "16", "--val", "5"])
        }
    }

    override class func tearDown() { try? FileManager.default.removeItem(at: dataDirectory) }

    override func setUpWithError() throws {
        directory = try makeTemporaryDirectory("ocr-ddp-cli")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// The quick-start config shrunk so a step takes milliseconds.
    var small: [String] {
        ["--cfg-options", "data.data_root=\(Self.dataDirectory.path)", "model.backbone.base_channels=8",
         "model.decode_head.0.channels=16", "model.decode_head.1.channels=16", "model.decode_head.1.ocr_channels=8",
         "data.batch_size=1", "train_cfg.max_iters=12", "train_cfg.val_interval=100", "checkpoint.interval=6",
         "log.interval=3", "data.num_workers=1"]
    }

    func run(_ ranks: Int, _ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let result = ranks == 0 ? try runProcess(OCRDDPBinary.path, args) : try mpirun(ranks, [OCRDDPBinary.path] + args)
        XCTAssertFalse(result.timedOut, "\(args) hung", file: file, line: line)
        return result
    }

    func assertResumeIsExact(ranks: Int) throws {
        let straight = directory.appendingPathComponent("straight").path
        let split = directory.appendingPathComponent("split").path
        let a = try run(ranks, ["train", "--work-dir", straight] + small)
        XCTAssertEqual(a.status, 0, a.stderr)
        let b = try run(ranks, ["train", "--work-dir", split, "--stop-at-iter", "6"] + small)
        XCTAssertEqual(b.status, 0, b.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(split)/iter_12"), "the first half stops at 6")
        let c = try run(ranks, ["train", "--work-dir", split, "--resume"] + small)
        XCTAssertEqual(c.status, 0, c.stderr)
        XCTAssertTrue(c.stdout.contains("resumed from \(split)/iter_6 at iteration 6"), c.stdout)
        let (x, y) = (try Data(contentsOf: URL(fileURLWithPath: "\(straight)/iter_12/model.safetensors")),
                      try Data(contentsOf: URL(fileURLWithPath: "\(split)/iter_12/model.safetensors")))
        XCTAssertEqual(x, y, "12 straight iterations and 6 + resumed 6 must give bit-identical weights")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(straight)/iter_12/optimizer.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: "\(split)/iter_12/optimizer.safetensors")))
    }

    func testResumeIsExactInOneProcess() throws { try assertResumeIsExact(ranks: 0) }

    func testResumeIsExactOnTwoRanks() throws { try assertResumeIsExact(ranks: 2) }

    func testTwoRankEvaluationEqualsOneRank() throws {
        let work = directory.appendingPathComponent("w").path
        XCTAssertEqual(try run(0, ["train", "--work-dir", work] + small).status, 0)
        let config = directory.appendingPathComponent("config.yaml").path
        try FileManager.default.copyItem(atPath: "\(work)/config.yaml", toPath: config)
        let one = try run(0, ["eval", config, "\(work)/iter_12"])
        let two = try run(2, ["eval", config, "\(work)/iter_12", "--show-dir", directory.appendingPathComponent("show").path])
        XCTAssertEqual(one.status, 0, one.stderr)
        XCTAssertEqual(two.status, 0, two.stderr)
        let last = { (r: ProcessResult) in r.stdout.split(separator: "\n").last.map(String.init) ?? "" }
        XCTAssertTrue(last(one).hasPrefix("{") && last(one).contains("\"mIoU\":"), one.stdout)
        XCTAssertEqual(last(one), last(two))
        let shown = try FileManager.default.contentsOfDirectory(atPath: directory.appendingPathComponent("show").path)
        XCTAssertEqual(shown.count, 5, "one overlay per val image across both ranks")
    }

    /// `bench` prints the JSON line of docs/INTERFACE.md last, on one rank and on two.
    func testBenchPrintsTheInterfaceJSONLine() throws {
        let args = ["bench", "--iters", "2", "--warmup", "1", "--crop", "32x64"] + small
        for ranks in [0, 2] {
            let r = try run(ranks, args)
            XCTAssertEqual(r.status, 0, r.stderr)
            let last = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
            let json = try JSONSerialization.jsonObject(with: Data(last.utf8)) as! [String: Any]
            for key in ["img_per_s", "ms_per_step", "ranks", "threads_per_rank", "batch_per_rank", "crop", "peak_rss_mb",
                        "phases"] {
                XCTAssertNotNil(json[key], "\(key) missing from \(last)")
            }
            XCTAssertEqual(json["ranks"] as? Int, max(ranks, 1))
            XCTAssertEqual(json["crop"] as? [Int], [32, 64])
            let phases = json["phases"] as! [String: Double]
            XCTAssertEqual(Set(phases.keys), ["data", "forward", "backward", "allreduce", "allreduce_exposed", "optimizer"])
            XCTAssertGreaterThan(json["gradient_mb"] as! Double, 0)
            XCTAssertGreaterThan(phases["forward"]!, 0)
            XCTAssertGreaterThan(phases["backward"]!, 0)
            XCTAssertGreaterThan(json["img_per_s"] as! Double, 0)
            XCTAssertEqual(json["precision"] as? String, "float32")
        }
    }

    /// `bench-convs` times forward and backward of every convolution shape it lists, in fp32, in bf16 and with the
    /// algorithms alternated (each backward after a forward of its own: backward lets go of the saved input).
    func testBenchConvsTimesEveryShape() throws {
        for extra in [[], ["--amp"], ["--amp", "--alternate"]] {
            let r = try run(0, ["bench-convs", "--height", "32", "--width", "32", "--repeats", "1", "--threads", "1"]
                                + extra)
            XCTAssertEqual(r.status, 0, "\(extra): \(r.stderr)")
            for shape in ["layer4 3×3 d4 512→512", "ocr bottleneck 3×3 2048→512"] {
                XCTAssertTrue(r.stdout.contains(shape), "\(extra): no \(shape) row in\n\(r.stdout)")
            }
        }
    }

    /// `--amp` runs bf16 where the CPU has a bf16 dot product, and says in one line that it runs fp32 where not;
    /// bench reports the precision it ran. A training run with it writes the AmpOptimWrapper into config.yaml.
    func testAmpTrainsAndBenchesInBF16() throws {
        let r = try run(0, ["bench", "--amp", "--iters", "1", "--warmup", "1", "--crop", "32x64"] + small)
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: Data((r.stdout.split(separator: "\n").last ?? "").utf8))
            as! [String: Any]
        XCTAssertEqual(json["precision"] as? String, BF16.hardwareSupported ? "bfloat16" : "float32")
        XCTAssertEqual(r.stderr.contains("training in fp32"), !BF16.hardwareSupported, r.stderr)
        let work = directory.appendingPathComponent("amp").path
        let t = try run(2, ["train", "--amp", "--work-dir", work] + small + ["train_cfg.max_iters=2"])
        XCTAssertEqual(t.status, 0, t.stderr)
        let config = try String(contentsOfFile: "\(work)/config.yaml", encoding: .utf8)
        XCTAssertTrue(config.contains("AmpOptimWrapper"), config)
        XCTAssertEqual(t.stdout.contains("bf16 GEMM operands"), BF16.hardwareSupported, t.stdout)
    }

    /// OpenBLAS 0.3.21 takes CPUs newer than it knows for SSE3 ("Prescott"); on an AVX-512 CPU the binary asks for
    /// its SkylakeX kernels instead, and a core type the user set is kept.
    func testOpenBLASGetsAnAVX512KernelUnlessTheUserChoseOne() throws {
        let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        try XCTSkipUnless(["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy { cpuinfo.contains(" \($0) ") },
                          "no AVX-512 here")
        let core = { (environment: [String: String]) throws -> String in
            let r = try runProcess("/usr/bin/env", environment.isEmpty ? ["-u", "OPENBLAS_CORETYPE", OCRDDPBinary.path]
                                   + ["bench", "--iters", "1", "--warmup", "0", "--crop", "32x64"] + self.small
                                   : [OCRDDPBinary.path, "bench", "--iters", "1", "--warmup", "0", "--crop", "32x64"] + self.small,
                                   environment: environment)
            let json = try JSONSerialization.jsonObject(with: Data((r.stdout.split(separator: "\n").last ?? "").utf8))
            return (json as! [String: Any])["openblas_core"] as! String
        }
        XCTAssertNotEqual(try core([:]), "Prescott")
        XCTAssertEqual(try core(["OPENBLAS_CORETYPE": "Haswell"]), "Haswell")
    }

    /// `predict` writes one palette PNG per image, of the image's size, holding class indices.
    func testPredictWritesPalettePNGs() throws {
        let work = directory.appendingPathComponent("p").path
        XCTAssertEqual(try run(0, ["train", "--work-dir", work] + small + ["train_cfg.max_iters=2"]).status, 0)
        let images = try FileManager.default.subpathsOfDirectory(atPath: Self.dataDirectory.appendingPathComponent("leftImg8bit/val").path)
            .filter { $0.hasSuffix(".png") }.prefix(2)
            .map { Self.dataDirectory.appendingPathComponent("leftImg8bit/val/\($0)").path }
        let out = directory.appendingPathComponent("pred").path
        let r = try run(0, ["predict", "\(work)/config.yaml", "\(work)/iter_2"] + images + ["--out-dir", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        for image in images {
            let name = ((image as NSString).lastPathComponent as NSString).deletingPathExtension
            let decoded = try ImageCodec.readPNG("\(out)/\(name).png")
            let source = try ImageCodec.readRGB(image)
            XCTAssertEqual(decoded.image.width, source.width)
            XCTAssertEqual(decoded.image.height, source.height)
            XCTAssertNotNil(decoded.palette, "a palette PNG")
            let label = try ImageCodec.readLabel("\(out)/\(name).png")
            XCTAssertTrue(label.values.allSatisfy { $0 < 8 }, "palette indices are classes")
        }
    }

    /// SIGTERM (what Slurm sends before preemption) finishes the step, checkpoints and exits 0; the checkpoint is
    /// the iteration the run reached.
    func testSigtermCheckpointsAndExitsCleanly() throws {
        let work = directory.appendingPathComponent("term").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: OCRDDPBinary.path)
        process.arguments = ["train", "--work-dir", work] + small + ["train_cfg.max_iters=100000"]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: "\(work)/log.jsonl") && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.1)
        }
        process.terminate()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        let pointer = try String(contentsOfFile: "\(work)/last_checkpoint", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(work)/\(pointer)/trainer_state.json")))
        let iteration = (state as! [String: Any])["iteration"] as! Int
        XCTAssertGreaterThanOrEqual(iteration, 3, "stopped after the first log interval")
        XCTAssertEqual(pointer, "iter_\(iteration)", "relative to the work dir")
    }

    /// A loss that turns non-finite stops training with a one-line reason; the checkpoints written before stay.
    func testNonFiniteLossStopsAndKeepsTheLastCheckpoint() throws {
        let work = directory.appendingPathComponent("nan").path
        let r = try run(0, ["train", "--work-dir", work] + small + ["checkpoint.interval=1", "optimizer.lr=1e30",
                                                                     "param_scheduler={type: PolyLR, power: 0.9, eta_min: 0.0001}"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("loss is") && r.stderr.contains("stopping"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        let pointer = try String(contentsOfFile: "\(work)/last_checkpoint", encoding: .utf8)
        XCTAssertTrue(r.stderr.contains(pointer.trimmingCharacters(in: .whitespacesAndNewlines)), r.stderr)
    }

    /// Misuse gives a non-zero exit and one line on stderr that names the file or key.
    /// What a user sees: mmengine-style lines per log interval and evaluation progress, no JSON and no empty
    /// lines on the console; the numbers go to log.jsonl and TensorBoard, which the tensorboard package reads back
    /// as log.jsonl has them (Tools/check_tensorboard.py; skipped where the package is not installed).
    func testConsoleIsReadableAndTensorBoardHoldsTheNumbers() throws {
        let work = directory.appendingPathComponent("console").path
        let r = try run(2, ["train", "--work-dir", work] + small + ["train_cfg.val_interval=6"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        XCTAssertFalse(lines.contains { $0.trimmingCharacters(in: .whitespaces).isEmpty }, "empty line in:\n\(r.stdout)")
        XCTAssertFalse(r.stdout.contains("{\""), "JSON on the console:\n\(r.stdout)")
        XCTAssertTrue(r.stdout.contains("Iter(train) [ 3/12]  lr: ") && r.stdout.contains("loss_ocr: "), r.stdout)
        XCTAssertTrue(r.stdout.contains("Iter(val) [5/5]  100%"), r.stdout)
        // Curves after every evaluation, and by `plot`: the three series' colours are drawn, and so are the axes.
        let plotted = directory.appendingPathComponent("plotted.png").path
        let plot = try runProcess(OCRDDPBinary.path, ["plot", work, "--out", plotted])
        XCTAssertEqual(plot.status, 0, plot.stderr)
        for path in ["\(work)/curves.png", plotted] {
            let curves = try ImageCodec.readRGB(path)
            XCTAssertEqual([curves.width, curves.height], [1200, 900])
            let colours = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [0, 0, 0]].map { colour in
                stride(from: 0, to: curves.pixels.count, by: 3).filter { i in
                    (0..<3).allSatisfy { Int(curves.pixels[i + $0]) == colour[$0] }
                }.count
            }
            XCTAssertTrue(colours.allSatisfy { $0 > 500 }, "pixels per series colour and black: \(colours)")
        }
        let missing = try runProcess(OCRDDPBinary.path, ["plot", directory.appendingPathComponent("nowhere").path])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("nowhere/log.jsonl: cannot read the training log"), missing.stderr)
        let events = try FileManager.default.contentsOfDirectory(atPath: "\(work)/tensorboard")
        XCTAssertEqual(events.filter { $0.hasPrefix("events.out.tfevents.") }.count, 1, "\(events)")
        let probe = try runProcess("/usr/bin/env", ["python3", "-c", "import tensorboard"])
        try XCTSkipIf(probe.status != 0, "the tensorboard package is not installed (pip install tensorboard)")
        let check = try runProcess("/usr/bin/env", ["python3", "Tools/check_tensorboard.py", work])
        XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
        print(check.stdout)
    }

    func testBadInputGivesOneLineErrors() throws {
        let cases: [([String], String)] = [
            (["train", "/nonexistent/config.yaml"], "/nonexistent/config.yaml: cannot read config file"),
            (["train", "--work-dir", directory.path, "--cfg-options", "train_cfg.max_iterz=3"], "train_cfg.max_iterz"),
            (["train", "--work-dir", directory.path, "--cfg-options", "optimizer.lr=fast"], "optimizer.lr"),
            (["eval", "Configs/quickstart.yaml", "/nonexistent/iter_4"], "/nonexistent/iter_4"),
            (["train", "--work-dir", directory.appendingPathComponent("r").path, "--resume"] + small, "no complete checkpoint"),
            (["bench", "--crop", "abc"], "--crop 'abc'"),
            (["bench", "--iters", "0"], "--iters 0 --warmup 2: need iters ≥ 1"),
            (["bench-allreduce", "--sizes", "4,6"], "--sizes '6': expected a positive multiple of 4 bytes"),
            (["bench-allreduce", "--repeats", "0"], "--repeats 0"),
            (["eval", "Configs/quickstart.yaml", "Tests/Fixtures/mmseg/checkpoint/model.safetensors"],
             "model.safetensors does not fit the config's model: loaded 31 tensors; 108 missing (backbone.stem.0.weight, "),
            (["train", "--work-dir", directory.appendingPathComponent("k").path] + small + ["model.num_classes=5"],
             "config key 'model.num_classes': 5, but the synthetic dataset has 8 classes"),
        ]
        for (args, needle) in cases {
            let r = try runProcess(OCRDDPBinary.path, args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            let lines = r.stderr.split(separator: "\n").filter { !$0.isEmpty }
            XCTAssertEqual(lines.count, 1, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(needle), "\(args): \(r.stderr)")
        }
        // Without crop or pad a 1×1 image is a 1×1 batch: batch norm would see one value per channel.
        let tiny = directory.appendingPathComponent("tiny")
        for split in ["train", "val"] {
            let images = tiny.appendingPathComponent("leftImg8bit/\(split)/t"), labels = tiny.appendingPathComponent("gtFine/\(split)/t")
            try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: labels, withIntermediateDirectories: true)
            try ImageCodec.writeRGB(PixelImage(width: 1, height: 1, channels: 3, filledWith: 90),
                                    to: images.appendingPathComponent("t_000000_000019_leftImg8bit.png").path)
            try ImageCodec.writeLabel(LabelImage(width: 1, height: 1, filledWith: 1),
                                      to: labels.appendingPathComponent("t_000000_000019_gtFine_labelTrainIds.png").path)
        }
        let t = try runProcess(OCRDDPBinary.path, ["train", "--work-dir", directory.appendingPathComponent("t").path]
                               + small + ["data.data_root=\(tiny.path)", "data.train_pipeline=[]"])
        XCTAssertNotEqual(t.status, 0)
        XCTAssertEqual(t.stderr.split(separator: "\n").filter { !$0.isEmpty }.count, 1, t.stderr)
        XCTAssertTrue(t.stderr.contains("t_000000_000019: a training batch of 1 image(s) of 1×1 gives a 1×1 smallest"),
                      t.stderr)
        // A corrupt weights file names itself.
        let bad = directory.appendingPathComponent("bad.safetensors").path
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: bad))
        let r = try runProcess(OCRDDPBinary.path, ["train", "--work-dir", directory.appendingPathComponent("lf").path,
                                                   "--load-from", bad] + small)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains(bad), r.stderr)
    }
}
