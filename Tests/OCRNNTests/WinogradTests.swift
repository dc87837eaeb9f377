import OCRNN
import OCRTensor
import OCRTestSupport
import XCTest

/// The Winograd F(2×2, 3×3) convolution against the im2col + GEMM reference it replaces for 3×3 stride-1
/// convolutions: output, input gradient and weight gradient, over odd sizes (partial blocks), dilations that split
/// the image into sub-images (and one larger than the image), and more than one image.
final class WinogradTests: XCTestCase {
    func testWinogradAgreesWithIm2colGemm() {
        // (in, out, height, width, dilation, images)
        for (cin, cout, h, w, d, n) in [(3, 4, 7, 9, 1, 3), (5, 6, 8, 8, 2, 2), (4, 3, 6, 10, 4, 1),
                                        (3, 2, 3, 5, 4, 2), (8, 8, 1, 1, 1, 1), (16, 24, 13, 11, 2, 2)] {
            let tag = "in \(cin) out \(cout) \(h)×\(w) d\(d) n\(n)"
            let (fast, reference) = (makeConvolution(cin, cout, d), makeConvolution(cin, cout, d))
            fast.conv.algorithm = .winograd
            reference.conv.algorithm = .im2colGemm
            let x = randomTensor([n, cin, h, w], seed: 5)
            let y = fast.conv.forward(x).clone()
            let expected = reference.conv.forward(x)
            let dy = randomTensor(expected.shape, seed: 6)
            let dx = fast.conv.backward(dy)!.clone()
            let expectedDx = reference.conv.backward(dy)!
            for c in [compare("\(tag) y", y, expected), compare("\(tag) dx", dx, expectedDx),
                      compare("\(tag) dweight", fast.conv.weight.grad, reference.conv.weight.grad)] {
                XCTAssertLessThan(c.relativeMax, 1e-5, c.description)
            }
        }
    }

    func makeConvolution(_ cin: Int, _ cout: Int, _ dilation: Int) -> (store: ParameterStore, conv: Conv2d) {
        let store = ParameterStore()
        let conv = Conv2d(store.root.child("c"), in: cin, out: cout, kernel: 3, padding: dilation, dilation: dilation,
                          bias: true)
        store.finalize()
        store.initialize(seed: 4)
        return (store, conv)
    }
}
