import Foundation
import OCRData
import OCRTestSupport
import OCRDistributed
import OCRTrain
import XCTest

final class ConfigTests: XCTestCase {
    func error(_ body: () throws -> Void) -> String {
        do { try body(); return "no error" } catch { return "\(error)" }
    }

    func testBuiltInQuickstartIsTheShippedFile() throws {
        let shipped = try String(contentsOf: Fixtures.directory.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Configs/quickstart.yaml"), encoding: .utf8)
        XCTAssertEqual(BuiltInConfigs.quickstart, shipped)
        let c = try ExperimentConfig.load(path: nil, overrides: [])
        XCTAssertEqual(c.model.depth, 18)
        XCTAssertEqual(c.data.type, .synthetic)
    }

    func testEveryShippedConfigLoads() throws {
        let dir = Fixtures.directory.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Configs")
        let files = try FileManager.default.subpathsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".yaml") }
        XCTAssertGreaterThanOrEqual(files.count, 29, "24 mmseg configs, 4 of ours and the quick start")
        for f in files {
            XCTAssertNoThrow(try ExperimentConfig.load(path: dir.appendingPathComponent(f).path, overrides: []), f)
        }
        let r50 = try ExperimentConfig.load(path: dir.appendingPathComponent("ours/ocrnet_r50-d8_4xb2-80k_cityscapes-512x1024.yaml").path,
                                            overrides: [])
        XCTAssertEqual(r50.model.depth, 50)
        XCTAssertEqual(r50.maxIters, 80000)
        XCTAssertEqual(r50.learningRate, 0.01)
        XCTAssertEqual(r50.data.batchSize, 2)
        // mmseg's 8xb2 R101 recipe: lr 0.02, PolyLR to 2e-4 by iteration 40000 of 80000, then constant.
        let r101 = try ExperimentConfig.load(path: dir.appendingPathComponent("ocrnet_r101-d8_8xb2-80k_cityscapes-512x1024.yaml").path,
                                             overrides: [])
        XCTAssertEqual(r101.learningRate, 0.02)
        let rates = r101.learningRates()
        XCTAssertEqual(rates[39999], 2e-4, accuracy: 1e-15)
        XCTAssertEqual(rates[79999], 2e-4, accuracy: 1e-15)
        XCTAssertGreaterThan(rates[39998], 2e-4)
        let voc = try ExperimentConfig.load(path: dir.appendingPathComponent("ocrnet_hr18s_4xb4-20k_voc12aug-512x512.yaml").path,
                                            overrides: [])
        XCTAssertEqual(voc.data.trainSplit, "train+aug", "mmseg's ConcatDataset of the VOC train and aug lists")
        XCTAssertEqual(voc.testTimeAugmentation, TestTimeAugmentation(ratios: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75],
                                                                      flips: [false, true]), "mmseg's tta_pipeline")
        let path = dir.appendingPathComponent("ocrnet_hr18s_4xb4-20k_voc12aug-512x512.yaml").path
        XCTAssertTrue(error { _ = try ExperimentConfig.load(path: path, overrides: [
            "tta_pipeline.1.transforms.1.1.prob=0.5"]) }.contains("tta_pipeline.1.transforms.1.1.prob"))
        XCTAssertTrue(error { _ = try ExperimentConfig.load(path: path, overrides: [
            "tta_model.type=OtherTTA"]) }.contains("tta_model.type"))
    }

    func testOverridesWithDottedPathsAndListIndices() throws {
        let c = try ExperimentConfig.load(path: nil, overrides: [
            "train_cfg.max_iters=10", "model.decode_head.1.dropout_ratio=0", "optimizer.lr=0.5",
            "model.test_cfg={mode: slide, crop_size: [64, 64], stride: [32, 32]}", "data.batch_size=3",
        ])
        XCTAssertEqual(c.maxIters, 10)
        XCTAssertEqual(c.model.ocrDropout, 0)
        XCTAssertEqual(c.model.fcnDropout, 0.1)
        XCTAssertEqual(c.learningRate, 0.5)
        XCTAssertEqual(c.testMode, .slide(crop: [64, 64], stride: [32, 32]))
        XCTAssertEqual(c.data.batchSize, 3)
        XCTAssertTrue(c.tree.yaml.contains("max_iters: 10"), "the resolved tree carries the override")
    }

    func testUnknownKeysAndWrongTypesNameTheKey() {
        XCTAssertEqual(error { _ = try ExperimentConfig.load(path: nil, overrides: ["train_cfg.max_iter=10"]) },
                       "unknown config key 'train_cfg.max_iter'")
        XCTAssertTrue(error { _ = try ExperimentConfig.load(path: nil, overrides: ["model.backbone.depth=fifty"]) }
            .contains("config key 'model.backbone.depth': expected an integer"))
        XCTAssertTrue(error { _ = try ExperimentConfig.load(path: nil, overrides: ["model.decode_head.5.channels=3"]) }
            .contains("'5' is not an index of a list of 2"))
        XCTAssertTrue(error { _ = try ExperimentConfig.load(path: nil, overrides: ["model.backbone.depth=42"]) }
            .contains("model.backbone.depth: 42"))
        XCTAssertTrue(error { _ = try ExperimentConfig.load(path: nil, overrides: ["data.batch_sise=2"]) }
            .contains("data.batch_sise"))
        XCTAssertTrue(error { _ = try ExperimentConfig.load(path: nil, overrides: ["max_iters"]) }.contains("KEY=VALUE"))
        XCTAssertEqual(error { _ = try ExperimentConfig.load(path: "/nonexistent.yaml", overrides: []) },
                       "/nonexistent.yaml: cannot read config file")
    }

    /// mmengine's names: OptimWrapper is fp32, AmpOptimWrapper is bf16 on CPU (its autocast default there); a
    /// float16 dtype, another wrapper type or a bad loss scale is a one-line error naming the key.
    func testOptimWrapperPicksThePrecision() throws {
        XCTAssertEqual(try ExperimentConfig.load(path: nil, overrides: []).precision, .float32)
        XCTAssertEqual(try ExperimentConfig.load(path: nil, overrides: ["optim_wrapper={type: OptimWrapper}"]).precision,
                       .float32)
        for wrapper in ["{type: AmpOptimWrapper}", "{type: AmpOptimWrapper, dtype: bfloat16, loss_scale: dynamic}",
                        "{type: AmpOptimWrapper, loss_scale: 512}"] {
            XCTAssertEqual(try ExperimentConfig.load(path: nil, overrides: ["optim_wrapper=\(wrapper)"]).precision,
                           .bfloat16, wrapper)
        }
        XCTAssertTrue(error { _ = try ExperimentConfig.load(path: nil, overrides: ["optim_wrapper={type: AmpOptimWrapper, dtype: float16}"]) }
            .contains("config key 'optim_wrapper.dtype': 'float16' is not bfloat16"))
        XCTAssertTrue(error { _ = try ExperimentConfig.load(path: nil, overrides: ["optim_wrapper.type=ApexOptimWrapper"]) }
            .contains("config key 'optim_wrapper.type'"))
        XCTAssertTrue(error { _ = try ExperimentConfig.load(path: nil, overrides: ["optim_wrapper={type: AmpOptimWrapper, loss_scale: -1}"]) }
            .contains("config key 'optim_wrapper.loss_scale'"))
    }

    func testModelWrapperPicksTheGradientCommunication() throws {
        let plain = try ExperimentConfig.load(path: nil, overrides: []).gradientCommunication
        XCTAssertEqual(plain, GradientCommunication())
        XCTAssertEqual(plain.threadSupport, .funneled)
        let chosen = try ExperimentConfig.load(path: nil, overrides: [
            "model_wrapper_cfg={type: MMDistributedDataParallel, bucket_cap_mb: 4, overlap: thread, "
            + "gradient_payload: bf16, allreduce: hierarchical}"]).gradientCommunication
        XCTAssertEqual(chosen, GradientCommunication(overlap: .thread, payload: .bf16, topology: .hierarchical,
                                                     bucketBytes: 4 << 20))
        XCTAssertEqual(chosen.threadSupport, .multiple)
        for (override, needle) in [
            ("model_wrapper_cfg.gradient_payload=fp16", "config key 'model_wrapper_cfg.gradient_payload': 'fp16' is not fp32 or bf16"),
            ("model_wrapper_cfg.allreduce=ring", "'model_wrapper_cfg.allreduce': 'ring' is not flat or hierarchical"),
            ("model_wrapper_cfg.overlap=none", "'model_wrapper_cfg.overlap': 'none'"),
            ("model_wrapper_cfg.bucket_cap_mb=0", "'model_wrapper_cfg.bucket_cap_mb'"),
            ("model_wrapper_cfg.type=FSDP", "'model_wrapper_cfg.type'"),
            ("model_wrapper_cfg.find_unused_parameters=true", "unknown config key 'model_wrapper_cfg.find_unused_parameters'"),
        ] {
            let message = error { _ = try ExperimentConfig.load(path: nil, overrides: [override]) }
            XCTAssertTrue(message.contains(needle), "\(override): \(message)")
        }
    }

    /// The legacy single-block form: PolyLR over the run as mmengine counts it (T = max_iters − 1, so the last
    /// iteration is at eta_min), times the mmseg 0.x linear warm-up factor.
    func testPolyLRWithWarmup() throws {
        let c = try ExperimentConfig.load(path: nil, overrides: [
            "optimizer.lr=0.01", "param_scheduler={type: PolyLR, power: 0.9, eta_min: 0.0001, warmup_iters: 10, warmup_ratio: 0.1}",
            "train_cfg.max_iters=100",
        ])
        let rates = c.learningRates()
        XCTAssertEqual(rates.count, 100)
        XCTAssertEqual(rates[0], 0.01 * 0.1, accuracy: 1e-15)
        XCTAssertEqual(rates[5], ((0.01 - 0.0001) * pow(1 - 5.0 / 99, 0.9) + 0.0001) * 0.55, accuracy: 1e-12)
        XCTAssertEqual(rates[50], (0.01 - 0.0001) * pow(1 - 50.0 / 99, 0.9) + 0.0001, accuracy: 1e-12)
        XCTAssertEqual(rates[99], 0.0001, accuracy: 1e-15)
    }

    /// mmengine's own rates (Tests/Fixtures/mmseg/schedules.json, Tools/make_golden_mmseg.py) for PolyLR over 3
    /// iterations, PolyLR ending halfway through the run (ocrnet_r101-d8_8xb2-80k's shape) and LinearLR warm-up
    /// followed by PolyLR, given as mmseg writes param_scheduler lists.
    func testScheduleListsMatchMMEngine() throws {
        let data = try Data(contentsOf: Fixtures.url("mmseg/schedules.json"))
        let cases = (try JSONSerialization.jsonObject(with: data) as! [String: Any])["cases"] as! [[String: Any]]
        XCTAssertEqual(cases.count, 3)
        for c in cases {
            let name = c["name"] as! String
            let schedulers = String(data: try JSONSerialization.data(withJSONObject: c["param_scheduler"]!), encoding: .utf8)!
            let config = try ExperimentConfig.load(path: nil, overrides: [
                "optimizer.lr=\(c["lr"]!)", "train_cfg.max_iters=\(c["max_iters"]!)", "param_scheduler=\(schedulers)"])
            let expected = c["rates"] as! [Double]
            let ours = config.learningRates()
            XCTAssertEqual(ours.count, expected.count, name)
            var worst = 0.0
            for (a, b) in zip(ours, expected) { worst = max(worst, abs(a - b) / b) }
            print("\(name): largest relative difference to mmengine \(worst)")
            XCTAssertLessThanOrEqual(worst, 1e-14, name)
        }
        XCTAssertTrue(error { _ = try ExperimentConfig.load(path: nil, overrides: [
            "param_scheduler=[{type: PolyLR, begin: 5, end: 5, by_epoch: false}]"]) }.contains("param_scheduler.0.end"))
        XCTAssertTrue(error { _ = try ExperimentConfig.load(path: nil, overrides: [
            "param_scheduler=[{type: CosineAnnealingLR, by_epoch: false}]"]) }.contains("param_scheduler.0.type"))
        XCTAssertTrue(error { _ = try ExperimentConfig.load(path: nil, overrides: [
            "param_scheduler=[{type: PolyLR, by_epoch: true}]"]) }.contains("param_scheduler.0.by_epoch"))
    }

    /// Values, not only keys: each bad value is an error naming its key (what a mutation run found accepted or
    /// crashing before these checks).
    func testBadValuesNameTheirKey() {
        let cases: [(String, String)] = [
            ("optimizer.lr=-.inf", "optimizer.lr"),
            ("optimizer.momentum=.nan", "optimizer.momentum"),
            ("optimizer.weight_decay=.nan", "optimizer.weight_decay"),
            ("data.train_pipeline.0.scale=[4611686018427387904, 256]", "data.train_pipeline: pipeline entry 0 (Resize): 'scale'"),
            ("data.train_pipeline.0.scale=[1e308, 256]", "'scale'"),
            ("data.train_pipeline.0.scale=[0, 256]", "'scale'"),
            ("data.train_pipeline=[{type: RandomResize, scale: [2048, 1024], ratio_range: [0.5, 1000]}]", "'ratio_range'"),
            ("data.train_pipeline=[{type: RandomCrop, crop_size: [64, 64], cat_max_ratio: 2}]", "'cat_max_ratio'"),
            ("data.train_pipeline=[{type: RandomFlip, prob: 1.5}]", "'prob'"),
            ("data.train_pipeline=[{type: RandomResize, scale: [256, 128], ratio_range: [0.5, 2.0]}, "
             + "{type: RandomCrop, crop_size: [600, 64]}]", "'crop_size' [600, 64] is larger than any image"),
            ("data.train_pipeline=[{type: Resize, scale: [256, 128], keep_ratio: false}, "
             + "{type: RandomCrop, crop_size: [129, 64]}]", "at most 128×256 pixels"),
            ("data.train_pipeline=[{type: Pad, size: [64, 64], seg_pad_val: 200}]", "seg_pad_val"),
            ("model.class_weight=[1, 2]", "class_weight"),
            ("model.decode_head.0.in_index=7", "model.decode_head.0.in_index"),
            ("model.decode_head.1.sampler={type: OHEMPixelSampler, min_kept: 0}", "sampler.min_kept"),
            ("model.decode_head.1.loss_decode={type: CrossEntropyLoss, loss_weight: .inf}", "loss_weight"),
            ("param_scheduler=[{type: LinearLR, start_factor: 2, by_epoch: false}]", "start_factor"),
            ("model.num_classes=1", "model.num_classes: 1 must be ≥ 2"),
            ("model.decode_head.1.ocr_channels=-1", "model.decode_head.1.ocr_channels: -1 must be in 1…16384"),
            ("model.decode_head.0.channels=100000", "model.decode_head.0.channels: 100000 must be in 1…16384"),
            ("model.backbone.dilations=[1, 1, 2, 400000]", "expected [1, 1, 2, 4] (output stride 8), got [1, 1, 2, 400000]"),
            ("data.batch_size=1 ; data.train_pipeline=[{type: RandomCrop, crop_size: [8, 8]}]", "data.batch_size"),
        ]
        for (override, needle) in cases {
            let overrides = override.components(separatedBy: " ; ")
            let message = error { _ = try ExperimentConfig.load(path: nil, overrides: overrides) }
            XCTAssertTrue(message.contains(needle), "\(override): \(message)")
        }
    }
}
