import Foundation
import OCRData
import OCRTensor
import OCRTestSupport
import XCTest

/// A checkpoint saved by real mmseg (mmengine's save_checkpoint), converted by Tools/convert_pth.py, through the
/// user's commands (Tests/Fixtures/mmseg/checkpoint, Tools/make_golden_mmseg.py): `predict` on 2 ranks agrees with
/// mmseg's test_step on its own test pipeline (a ×1.25 test-time resize), and equals `eval`'s prediction.
final class MMSegCheckpointTests: XCTestCase {
    var fixture: URL { Fixtures.url("mmseg/checkpoint") }
    var directory: URL!

    override func setUpWithError() throws { directory = try makeTemporaryDirectory("ocr-ddp-mmseg-checkpoint") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    var images: [String] {
        let folder = fixture.appendingPathComponent("leftImg8bit/val/frankfurt")
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).sorted()
            .map { folder.appendingPathComponent($0).path }
    }

    var configOptions: [String] { ["--cfg-options", "data.data_root=\(fixture.path)"] }

    /// Our predictions of the fixture's images, written by `predict` (on `ranks`, 0 = no launcher).
    func predict(ranks: Int, _ extra: [String] = []) throws -> [String: [UInt8]] {
        let out = directory.appendingPathComponent("pred\(ranks)\(extra.joined())").path
        let args = ["predict", fixture.appendingPathComponent("config.yaml").path,
                    fixture.appendingPathComponent("model.safetensors").path] + images + ["--out-dir", out] + extra
            + configOptions
        let r = ranks == 0 ? try runProcess(OCRDDPBinary.path, args) : try mpirun(ranks, [OCRDDPBinary.path] + args)
        XCTAssertEqual(r.status, 0, r.stderr)
        var predictions: [String: [UInt8]] = [:]
        for image in images {
            let name = ((image as NSString).lastPathComponent as NSString).deletingPathExtension
            predictions[name] = try ImageCodec.readLabel("\(out)/\(name).png").values
        }
        return predictions
    }

    func testPredictionsAgreeWithMMSegsTestStep() throws {
        try assertAgreesWithMMSeg(try predict(ranks: 2), prefix: "", "test_step")
    }

    /// `--tta` as mmseg's tools/test.py --tta: the tta_pipeline's 6 ratios × 2 flips merged by SegTTAModel.
    func testTestTimeAugmentationAgreesWithMMSegsTTA() throws {
        try assertAgreesWithMMSeg(try predict(ranks: 2, ["--tta"]), prefix: "tta.", "--tta")
    }

    func assertAgreesWithMMSeg(_ ours: [String: [UInt8]], prefix: String, _ what: String) throws {
        let f = try Fixtures.file("mmseg/checkpoint/predictions.safetensors")
        XCTAssertEqual(ours.count, 3)
        var (agree, total) = (0, 0)
        for (name, values) in ours {
            let stem = String(name.dropLast("_leftImg8bit".count))
            let theirs = Array(try f.entry(prefix + stem).bytes)
            XCTAssertEqual(values.count, theirs.count, name)
            agree += zip(values, theirs).filter { $0 == $1 }.count
            total += theirs.count
        }
        print("predictions agree with mmseg's \(what) on \(agree) of \(total) pixels")
        XCTAssertGreaterThanOrEqual(Double(agree) / Double(total), 0.999, what)
    }

    /// `eval --format-only` (mmseg's CityscapesMetric with format_only) on 2 ranks: one labelIds PNG per image,
    /// `<image basename>.png`, holding predict's train ids as label ids; the same on a test split without labels.
    /// The official evaluator (cityscapesscripts, where it is installed) scores the val output at eval's mIoU.
    func testFormatOnlyWritesCityscapesLabelIds() throws {
        let config = fixture.appendingPathComponent("config.yaml").path, weights = fixture.appendingPathComponent("model.safetensors").path
        let out = directory.appendingPathComponent("format").path
        let r = try mpirun(2, [OCRDDPBinary.path, "eval", config, weights, "--format-only", "--out-dir", out] + configOptions)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("wrote 3 Cityscapes labelIds PNGs"), r.stdout)
        let predicted = try predict(ranks: 0)
        let labelIds = LabelEncoding.cityscapesEvaluatedLabelIds
        for image in images {
            let name = ((image as NSString).lastPathComponent as NSString).deletingPathExtension
            XCTAssertEqual(try ImageCodec.readLabel("\(out)/\(name).png").values, predicted[name]!.map { labelIds[Int($0)] }, name)
        }
        // Cityscapes' test split has no labels: leftImg8bit/test alone.
        let testRoot = directory.appendingPathComponent("testsplit")
        try FileManager.default.createDirectory(at: testRoot.appendingPathComponent("leftImg8bit/test"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: fixture.appendingPathComponent("leftImg8bit/val/frankfurt"),
                                         to: testRoot.appendingPathComponent("leftImg8bit/test/frankfurt"))
        let testOut = directory.appendingPathComponent("formattest").path
        let t = try runProcess(OCRDDPBinary.path, ["eval", config, weights, "--format-only", "--out-dir", testOut, "--split", "test",
                                                   "--cfg-options", "data.data_root=\(testRoot.path)"])
        XCTAssertEqual(t.status, 0, t.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: testOut).sorted(),
                       try FileManager.default.contentsOfDirectory(atPath: out).sorted())

        let probe = try runProcess("/usr/bin/env", ["python3", "-c", "import cityscapesscripts"])
        try XCTSkipIf(probe.status != 0, "cityscapesscripts is not installed (pip install cityscapesscripts)")
        let scored = try runProcess(OCRDDPBinary.path, ["eval", config, weights] + configOptions)
        let json = try JSONSerialization.jsonObject(with: Data(scored.stdout.split(separator: "\n").last!.utf8)) as! [String: Any]
        let check = try runProcess("/usr/bin/env", ["python3", "Tools/check_cityscapes_format.py", fixture.path, out,
                                                    "\(json["mIoU"] as! Double)"])
        XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
        print(check.stdout)
    }

    /// `predict` runs the test pipeline and test_cfg as `eval` does: eval's per-class IoU equals the IoU of
    /// predict's outputs against the labels, for every class present.
    func testPredictEqualsEval() throws { try assertPredictEqualsEval([]) }

    func testPredictEqualsEvalWithTestTimeAugmentation() throws { try assertPredictEqualsEval(["--tta"]) }

    func assertPredictEqualsEval(_ extra: [String]) throws {
        let ours = try predict(ranks: 0, extra)
        let r = try runProcess(OCRDDPBinary.path, ["eval", fixture.appendingPathComponent("config.yaml").path,
                                                   fixture.appendingPathComponent("model.safetensors").path] + extra
                                                   + configOptions)
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.split(separator: "\n").last!.utf8)) as! [String: Any]
        let evalIoU = json["IoU"] as! [String: Any]
        let names = ClassInfo.cityscapes.names
        var intersection = [Int](repeating: 0, count: 19), union = [Int](repeating: 0, count: 19)
        for image in images {
            let name = ((image as NSString).lastPathComponent as NSString).deletingPathExtension
            let labelPath = image.replacingOccurrences(of: "leftImg8bit/", with: "gtFine/")
                .replacingOccurrences(of: "_leftImg8bit.png", with: "_gtFine_labelTrainIds.png")
            let label = try ImageCodec.readLabel(labelPath).values
            for (p, t) in zip(ours[name]!, label) where t != 255 {
                if p == t { intersection[Int(t)] += 1; union[Int(t)] += 1 } else { union[Int(t)] += 1; union[Int(p)] += 1 }
            }
        }
        var compared = 0
        for c in 0..<19 where union[c] > 0 {
            guard let reported = evalIoU[names[c]] as? Double else { continue }
            // eval reports percentages rounded to 2 decimals, as mmseg prints them.
            let iou = 100 * Double(intersection[c]) / Double(union[c])
            XCTAssertEqual(reported, (iou * 100).rounded() / 100, "\(names[c]) \(extra)")
            compared += 1
        }
        XCTAssertGreaterThan(compared, 5, "classes compared")
    }

    /// Tools/convert_pth.py turns the mmengine checkpoint into exactly the committed safetensors (needs torch, which
    /// the fixture script has and CI does not install).
    func testConverterReproducesTheCommittedWeights() throws {
        let probe = try runProcess("/usr/bin/env", ["python3", "-c", "import torch, safetensors"])
        try XCTSkipIf(probe.status != 0, "python3 with torch and safetensors is not installed here")
        let out = directory.appendingPathComponent("converted.safetensors").path
        let root = Fixtures.directory.deletingLastPathComponent().deletingLastPathComponent()
        let r = try runProcess("/usr/bin/env", ["python3", root.appendingPathComponent("Tools/convert_pth.py").path,
                                                fixture.appendingPathComponent("model.pth").path, out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let (converted, committed) = (try SafetensorsFile(path: out),
                                      try SafetensorsFile(path: fixture.appendingPathComponent("model.safetensors").path))
        XCTAssertEqual(converted.names.sorted(), committed.names.sorted())
        for name in committed.names {
            XCTAssertEqual(try converted.entry(name).bytes, try committed.entry(name).bytes, name)
        }
    }
}
