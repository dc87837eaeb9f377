import OCRNN
import OCRTensor
import OCRTestSupport
import XCTest

/// bf16 training keeps activations as bf16 bits once the forward is done with their fp32 values
/// (`BF16Activation`). Readers that round them anyway (a convolution's weight-gradient GEMM) or read their sign (a
/// ReLU's mask) must give the bits they give on the fp32 activation; a BN input kept so must move backward by no
/// more than bf16 rounding, and its forward not at all.
final class BF16ActivationTests: XCTestCase {
    func testKeptBitsAreTheGemmRounding() {
        let x = randomTensor([2, 3, 5, 7], seed: 1, lo: -3, hi: 3)
        x[0] = 0; x[1] = -0.0; x[2] = Float(bitPattern: 0x0001_2345); x[3] = .infinity; x[4] = .nan  // x[2]: subnormal
        let back = BF16Activation(rounding: x).expanded()
        let differ = (0..<x.count).filter { back[$0].bitPattern != BF16.round(x[$0]).bitPattern }
        XCTAssertEqual(differ, [], "expanded values differ from BF16.round at these indices")
    }

    func testConvolutionGradientsFromAKeptInputKeepTheirBits() {
        // (kernel, stride, padding, algorithm): the pointwise GEMM, the unfolded strided and stride-1 GEMMs.
        for (kernel, stride, padding, algorithm) in [(1, 1, 0, Conv2d.Algorithm.automatic), (3, 2, 1, .im2colGemm),
                                                     (3, 1, 1, .im2colGemm), (1, 2, 0, .automatic)] {
            let tag = "\(kernel)×\(kernel) stride \(stride) \(algorithm)"
            func convolution() -> (ParameterStore, Conv2d) {
                let store = ParameterStore()
                let conv = Conv2d(store.root.child("c"), in: 12, out: 10, kernel: kernel, stride: stride,
                                  padding: padding)
                conv.algorithm = algorithm
                store.finalize()
                store.initialize(seed: 4)
                store.trainingPrecision = .bfloat16
                return (store, conv)
            }
            let ((_, full), (_, kept)) = (convolution(), convolution())
            let x = randomTensor([2, 12, 9, 11], seed: 2)
            let y = full.forward(x)
            XCTAssertEqual(kept.forward(x).array.map(\.bitPattern), y.array.map(\.bitPattern), tag)
            kept.keepInput(BF16Activation(rounding: x))
            let dy = randomTensor(y.shape, seed: 3)
            let (dxFull, dxKept) = (full.backward(dy)!, kept.backward(dy)!)
            XCTAssertEqual(dxKept.array.map(\.bitPattern), dxFull.array.map(\.bitPattern), "\(tag): dx")
            XCTAssertEqual(kept.weight.grad.array.map(\.bitPattern), full.weight.grad.array.map(\.bitPattern),
                           "\(tag): dW")
        }
    }

    /// The OCR head's gather and similarity keep their A (the features, the queries) so: backward's bf16 GEMMs
    /// round it to the kept values, so dA and dB keep their bits.
    func testMatMulGradientsFromAKeptOperandKeepTheirBits() {
        let (batch, m, n, k) = (2, 7, 19, 33)
        for (transA, transB) in [(false, true), (true, false)] {
            let tag = "transA \(transA), transB \(transB)"
            let (full, kept) = (BatchedMatMul(transA: transA, transB: transB, alpha: 0.5),
                                BatchedMatMul(transA: transA, transB: transB, alpha: 0.5))
            let a = randomTensor(transA ? [batch, k, m] : [batch, m, k], seed: 14)
            let b = randomTensor(transB ? [batch, n, k] : [batch, k, n], seed: 15)
            func product(_ layer: BatchedMatMul) -> Tensor {
                layer.forward(a, b, batch: batch, m: m, n: n, k: k, outputShape: [batch, m, n], precision: .bfloat16)
            }
            let c = product(full)
            XCTAssertEqual(product(kept).array.map(\.bitPattern), c.array.map(\.bitPattern), tag)
            kept.keepA(BF16Activation(rounding: a))
            let dc = randomTensor(c.shape, seed: 16)
            let (dFull, dKept) = (full.backward(dc), kept.backward(dc))
            XCTAssertEqual(dKept.0.array.map(\.bitPattern), dFull.0.array.map(\.bitPattern), "\(tag): dA")
            XCTAssertEqual(dKept.1.array.map(\.bitPattern), dFull.1.array.map(\.bitPattern), "\(tag): dB")
        }
    }

    func testReLUMasksFromKeptOutputsKeepTheirBits() {
        func batchNorm() -> BatchNorm2d {
            let store = ParameterStore()
            let bn = BatchNorm2d(store.root.child("bn"), channels: 6, relu: true)
            store.finalize()
            store.initialize(seed: 5)
            store.trainingPrecision = .bfloat16
            return bn
        }
        let (full, kept) = (batchNorm(), batchNorm())
        let x = randomTensor([2, 6, 7, 5], seed: 6)
        let y = full.forward(x)
        kept.keepOutput(BF16Activation(rounding: kept.forward(x)))
        let dy = randomTensor(y.shape, seed: 7)
        XCTAssertEqual(kept.backward(dy).array.map(\.bitPattern), full.backward(dy).array.map(\.bitPattern), "BN + ReLU")

        let (joinFull, joinKept) = (ResidualAddReLU(), ResidualAddReLU())
        let (a, b) = (randomTensor([2, 4, 6, 6], seed: 8), randomTensor([2, 4, 6, 6], seed: 9))
        let joined = joinFull.forward(a, b)
        joinKept.keepOutput(BF16Activation(rounding: joinKept.forward(a, b)))
        let dj = randomTensor(joined.shape, seed: 10)
        XCTAssertEqual(joinKept.backward(dj).array.map(\.bitPattern), joinFull.backward(dj).array.map(\.bitPattern),
                       "residual join")
    }

    /// In bf16 training BN keeps its input as bf16 bits: the forward (fp32 statistics and normalisation) is the fp32
    /// one bit for bit, and backward, which centres the rounded input, lands within bf16 rounding of fp32's.
    func testBatchNormInputKeptInBF16MovesBackwardByRoundingOnly() {
        func batchNorm(_ precision: Precision) -> BatchNorm2d {
            let store = ParameterStore()
            let bn = BatchNorm2d(store.root.child("bn"), channels: 6)
            store.finalize()
            store.initialize(seed: 11)
            store.trainingPrecision = precision
            return bn
        }
        let (fp32, bf16) = (batchNorm(.float32), batchNorm(.bfloat16))
        let x = randomTensor([2, 6, 7, 5], seed: 12, lo: 0.5, hi: 3)
        XCTAssertEqual(bf16.forward(x).array.map(\.bitPattern), fp32.forward(x).array.map(\.bitPattern), "forward")
        let dy = randomTensor(x.shape, seed: 13)
        let c = compare("BN dx", bf16.backward(dy), fp32.backward(dy))
        XCTAssertGreaterThan(c.relativeNorm, 1e-5, "\(c.description): the input was not kept in bf16")
        XCTAssertLessThan(c.relativeNorm, 2e-2, c.description)
    }
}
