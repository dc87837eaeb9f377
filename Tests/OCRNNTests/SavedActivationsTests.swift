import OCRNN
import OCRTensor
import OCRTestSupport
import XCTest

/// What a layer saves for backward it lets go of once its backward has run, so that the storage serves the rest of
/// the backward instead of being held until the next forward replaces it (`Tensor.transient`). Checked by the
/// reference count: after backward, the test's own reference must be the only one left.
final class SavedActivationsTests: XCTestCase {
    func store(_ precision: Precision) -> ParameterStore {
        let store = ParameterStore()
        store.trainingPrecision = precision
        return store
    }

    func testConvolutionLetsGoOfItsInputOrItsBits() {
        for (precision, kernel) in [(Precision.float32, 3), (.bfloat16, 3), (.bfloat16, 1)] {
            let s = store(precision)
            let conv = Conv2d(s.root.child("c"), in: 4, out: 6, kernel: kernel, padding: kernel / 2)
            s.finalize()
            s.initialize(seed: 1)
            var x = randomTensor([2, 4, 5, 6], seed: 2)
            let y = conv.forward(x)
            XCTAssertFalse(isKnownUniquelyReferenced(&x), "\(precision) \(kernel)×\(kernel): forward saved no input")
            if precision == .bfloat16 {
                var bits = BF16Activation(rounding: x)
                conv.keepInput(bits)
                XCTAssertTrue(isKnownUniquelyReferenced(&x), "keepInput kept the fp32 input as well")
                _ = conv.backward(randomTensor(y.shape, seed: 3))
                XCTAssertTrue(isKnownUniquelyReferenced(&bits), "\(kernel)×\(kernel): kept bits held after backward")
            } else {
                _ = conv.backward(randomTensor(y.shape, seed: 3))
                XCTAssertTrue(isKnownUniquelyReferenced(&x), "\(kernel)×\(kernel): input held after backward")
            }
        }
    }

    func testBatchNormJoinAndMatMulLetGoOfWhatTheySaved() {
        let s = store(.float32)
        let bn = BatchNorm2d(s.root.child("bn"), channels: 3, relu: true)
        s.finalize()
        s.initialize(seed: 4)
        var x = randomTensor([2, 3, 4, 4], seed: 5)
        var y = bn.forward(x)
        XCTAssertFalse(isKnownUniquelyReferenced(&y), "BN + ReLU saved no output")
        _ = bn.backward(randomTensor(x.shape, seed: 6))
        XCTAssertTrue(isKnownUniquelyReferenced(&x), "BN input held after backward")
        XCTAssertTrue(isKnownUniquelyReferenced(&y), "BN output held after backward")

        let join = ResidualAddReLU()
        var joined = join.forward(randomTensor([2, 3, 4, 4], seed: 7), randomTensor([2, 3, 4, 4], seed: 8))
        XCTAssertFalse(isKnownUniquelyReferenced(&joined), "residual join saved no output")
        _ = join.backward(randomTensor(joined.shape, seed: 9))
        XCTAssertTrue(isKnownUniquelyReferenced(&joined), "residual join output held after backward")

        let product = BatchedMatMul(transB: true)
        var (a, b) = (randomTensor([2, 3, 5], seed: 10), randomTensor([2, 4, 5], seed: 11))
        let c = product.forward(a, b, batch: 2, m: 3, n: 4, k: 5, outputShape: [2, 3, 4])
        _ = product.backward(randomTensor(c.shape, seed: 12))
        XCTAssertTrue(isKnownUniquelyReferenced(&a) && isKnownUniquelyReferenced(&b), "matmul operands held after backward")
    }
}
