import OCRNN
import OCRTensor
import OCRTestSupport
import XCTest

/// Each op against PyTorch (float64 reference, Tools/make_golden.py): forward within 1e-5 and gradients within
/// 1e-4 relative (max |diff| / max |reference|), as docs/TESTING.md gives for single ops.
final class OpParityTests: XCTestCase {
    let forwardTolerance = 1e-5
    let gradientTolerance = 1e-4

    func check(_ name: String, _ actual: Tensor, _ expected: Tensor, _ tolerance: Double,
               file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.shape, expected.shape, "\(name) shape", file: file, line: line)
        let c = compare(name, actual, expected)
        print(c)
        XCTAssertLessThanOrEqual(c.relativeMax, tolerance, c.description, file: file, line: line)
    }

    func testConvolutions() throws {
        for name in ["conv_k3s1p1_bias", "conv_k3s2p1", "conv_k3s1p2d2", "conv_k3s1p4d4", "conv_k1s1_bias",
                     "conv_k1s2", "conv_k3s2p0"] {
            let f = try Fixtures.file("ops/\(name).safetensors")
            let (x, w) = (try f.tensor("x"), try f.tensor("weight"))
            let meta = { (key: String) in Int(f.metadata[key]!)! }
            let store = ParameterStore()
            let conv = Conv2d(store.root.child("conv"), in: w.shape[1], out: w.shape[0], kernel: w.shape[2],
                              stride: meta("stride"), padding: meta("padding"), dilation: meta("dilation"),
                              bias: meta("bias") == 1)
            store.finalize()
            conv.weight.value.copy(from: w)
            if let b = conv.bias { b.value.copy(from: try f.tensor("bias")) }
            check("\(name) y", conv.forward(x), try f.tensor("y"), forwardTolerance)
            let dx = conv.backward(try f.tensor("dy"))!
            check("\(name) dx", dx, try f.tensor("dx"), gradientTolerance)
            check("\(name) dweight", conv.weight.grad, try f.tensor("dweight"), gradientTolerance)
            if let b = conv.bias { check("\(name) dbias", b.grad, try f.tensor("dbias"), gradientTolerance) }
        }
    }

    func testBatchNormTrainAndEval() throws {
        for name in ["bn_train", "bn_eval"] {
            let f = try Fixtures.file("ops/\(name).safetensors")
            let x = try f.tensor("x")
            let store = ParameterStore()
            let bn = BatchNorm2d(store.root.child("bn"), channels: x.shape[1])
            store.finalize()
            store.training = f.metadata["training"] == "1"
            bn.weight.value.copy(from: try f.tensor("weight"))
            bn.bias.value.copy(from: try f.tensor("bias"))
            bn.runningMean.value.copy(from: try f.tensor("running_mean"))
            bn.runningVar.value.copy(from: try f.tensor("running_var"))
            check("\(name) y", bn.forward(x), try f.tensor("y"), forwardTolerance)
            check("\(name) running_mean", bn.runningMean.value, try f.tensor("running_mean_after"), forwardTolerance)
            check("\(name) running_var", bn.runningVar.value, try f.tensor("running_var_after"), forwardTolerance)
            XCTAssertEqual(bn.numBatchesTracked.value, store.training ? 1 : 0)
            check("\(name) dx", bn.backward(try f.tensor("dy")), try f.tensor("dx"), gradientTolerance)
            check("\(name) dweight", bn.weight.grad, try f.tensor("dweight"), gradientTolerance)
            check("\(name) dbias", bn.bias.grad, try f.tensor("dbias"), gradientTolerance)
        }
    }

    func testBilinearResize() throws {
        for name in ["resize_up_acfalse", "resize_up_actrue", "resize_down_acfalse", "resize_down_actrue",
                     "resize_x8_acfalse", "resize_mixed_acfalse"] {
            let f = try Fixtures.file("ops/\(name).safetensors")
            let resize = BilinearResize(alignCorners: f.metadata["align_corners"] == "1")
            let y = resize.forward(try f.tensor("x"), height: Int(f.metadata["out_h"]!)!,
                                   width: Int(f.metadata["out_w"]!)!)
            check("\(name) y", y, try f.tensor("y"), forwardTolerance)
            check("\(name) dx", resize.backward(try f.tensor("dy")), try f.tensor("dx"), gradientTolerance)
        }
    }

    func testSoftmax() throws {
        for name in ["softmax_axis1", "softmax_axis2"] {
            let f = try Fixtures.file("ops/\(name).safetensors")
            let softmax = Softmax(axis: Int(f.metadata["axis"]!)!)
            check("\(name) y", softmax.forward(try f.tensor("x")), try f.tensor("y"), forwardTolerance)
            check("\(name) dx", softmax.backward(try f.tensor("dy")), try f.tensor("dx"), gradientTolerance)
        }
    }

    /// PyTorch's F.cross_entropy (mean over the non-ignored pixels, weighted mean with class weights).
    func testCrossEntropyWithIgnoredPixelsAndClassWeights() throws {
        for name in ["ce_plain", "ce_weighted"] {
            let f = try Fixtures.file("ops/\(name).safetensors")
            let logits = try f.tensor("logits")
            let labelEntry = try f.entry("label")
            let labels = LabelMap(shape: labelEntry.shape, values: try f.int64s("label").map { Int32($0) })
            XCTAssertTrue(labels.values.contains(255), "fixture should hold ignored pixels")
            let weights = f.metadata["weighted"] == "1" ? try f.tensor("class_weight").array : nil
            let ce = CrossEntropyLoss(classWeights: weights, averageOverNonIgnored: true)
            let loss = ce.forward(logits, labels)
            check("\(name) loss", Tensor(shape: [1], values: [loss]), try f.tensor("loss"), forwardTolerance)
            check("\(name) dlogits", ce.backward(), try f.tensor("dlogits"), gradientTolerance)
        }
    }

    /// mmseg's CrossEntropyLoss and OHEMPixelSampler (Tests/Fixtures/mmseg/losses.safetensors): the default divides
    /// by every pixel, ignored ones included; avg_non_ignore by the counted ones; class weights by Σ w[y]; OHEM by
    /// threshold on the true-class probability and by loss rank.
    func testCrossEntropyAsMMSegReducesIt() throws {
        let f = try Fixtures.file("mmseg/losses.safetensors")
        let cases = ["mean_all_pixels", "avg_non_ignore", "class_weight", "ohem_thresh", "ohem_loss_rank"]
        for name in cases {
            let settings = try JSONSerialization.jsonObject(with: Data(f.metadata[name]!.utf8)) as! [String: Any]
            let lossDecode = settings["loss_decode"] as! [String: Any]
            let sampler = (settings["sampler"] as? [String: Any]).map {
                HardPixelSampler(threshold: ($0["thresh"] as? Double).map(Float.init), minKept: $0["min_kept"] as! Int)
            }
            let ce = CrossEntropyLoss(classWeights: (lossDecode["class_weight"] as? [Double])?.map(Float.init),
                                      averageOverNonIgnored: lossDecode["avg_non_ignore"] as? Bool ?? false,
                                      sampler: sampler)
            let weight = Float(lossDecode["loss_weight"] as! Double)
            let labelEntry = try f.entry("\(name).label")
            let labels = LabelMap(shape: labelEntry.shape, values: try f.int64s("\(name).label").map { Int32($0) })
            let loss = ce.forward(try f.tensor("\(name).logits"), labels) * weight
            check("\(name) loss", Tensor(shape: [1], values: [loss]), try f.tensor("\(name).loss"), forwardTolerance)
            check("\(name) dlogits", ce.backward(scale: weight), try f.tensor("\(name).dlogits"), gradientTolerance)
        }
    }

    /// Ties go to the first maximum in row-major window order and a NaN wins (the last one), as PyTorch's CPU
    /// kernel does, on the interior windows (unrolled) and the edge ones alike: values from {0, 1, 2} and a few NaN,
    /// against the textbook scan; backward routes each gradient to the chosen input.
    func testMaxPoolTiesAndNaN() {
        let (h, w) = (9, 12)
        let x = Tensor(zeros: [2, 3, h, w])
        var rng = SplitMix64(seed: 21)
        for i in 0..<x.count { x[i] = i % 17 == 5 ? .nan : Float(rng.next() % 3) }
        let pool = MaxPool2d(kernel: 3, stride: 2, padding: 1)
        let y = pool.forward(x).clone()
        let (ho, wo) = (y.shape[2], y.shape[3])
        let dy = Tensor(zeros: y.shape)
        for i in 0..<dy.count { dy[i] = Float(i + 1) }
        let dx = pool.backward(dy)
        let want = Tensor(zeros: x.shape)
        var mismatches = 0
        for plane in 0..<6 {
            for oh in 0..<ho {
                for ow in 0..<wo {
                    var (best, at) = (Float.nan, -1)
                    for ih in Swift.max(0, 2 * oh - 1)..<Swift.min(h, 2 * oh + 2) {
                        for iw in Swift.max(0, 2 * ow - 1)..<Swift.min(w, 2 * ow + 2) {
                            let v = x[(plane * h + ih) * w + iw]
                            if at < 0 || v > best || v.isNaN { (best, at) = (v, ih * w + iw) }
                        }
                    }
                    let out = (plane * ho + oh) * wo + ow
                    if y[out].bitPattern != best.bitPattern { mismatches += 1 }
                    want[plane * h * w + at] += dy[out]
                }
            }
        }
        XCTAssertEqual(mismatches, 0, "max pool values")
        XCTAssertEqual((0..<dx.count).filter { dx[$0] != want[$0] }.count, 0, "max pool: gradient routed to the chosen input")
    }

    func testMaxPool() throws {
        for name in ["maxpool", "maxpool_even"] {
            let f = try Fixtures.file("ops/\(name).safetensors")
            let pool = MaxPool2d(kernel: 3, stride: 2, padding: 1)
            check("\(name) y", pool.forward(try f.tensor("x")), try f.tensor("y"), forwardTolerance)
            check("\(name) dx", pool.backward(try f.tensor("dy")), try f.tensor("dx"), gradientTolerance)
        }
    }
}
