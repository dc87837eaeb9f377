import Foundation
import OCRData
import OCRModel
import OCRNN
import OCRTensor

/// Test-time inference as mmseg runs it: whole image or sliding windows, optionally over several scales and with a
/// horizontal flip, the class probabilities (softmax) averaged at the label's size, then argmax. Labels are never
/// resized; logits are.
public struct Inference {
    public let model: OCRNet
    public let mode: ExperimentConfig.TestMode
    public let scales: [Double]
    public let flip: Bool

    public init(model: OCRNet, config: ExperimentConfig) {
        self.model = model
        mode = config.testMode
        scales = config.testScales.isEmpty ? [1.0] : config.testScales
        flip = config.testFlip
    }

    /// image: 1×3×H×W (normalised) → class probabilities 1×K×outH×outW averaged over `model.test_cfg`'s views
    /// (scales of this image, flipped or not).
    public func probabilities(_ image: Tensor, outHeight: Int, outWidth: Int) -> Tensor {
        let (h, w) = (image.shape[2], image.shape[3])
        let flips = flip ? [false, true] : [false]
        // Views are made one at a time: at six scales of a 2048×1024 image they would not all fit at once.
        return averagedProbabilities(count: scales.count * flips.count, outHeight: outHeight, outWidth: outWidth) { i in
            let (scale, flipped) = (scales[i / flips.count], flips[i % flips.count])
            let scaled = scale == 1 ? image : BilinearResize(alignCorners: model.config.alignCorners)
                .forward(image, height: Int((Double(h) * scale).rounded()), width: Int((Double(w) * scale).rounded())).clone()
            return (flipped ? horizontallyFlipped(scaled) : scaled, flipped)
        }
    }

    /// mmseg's SegTTAModel: each view (3×h×w normalised, mirrored or not; TestTimeAugmentation) gives logits at its
    /// size, mirrored back, resized to outH×outW, softmax; the probabilities are averaged. → 1×K×outH×outW.
    public func probabilities(views: [TestTimeAugmentation.View], outHeight: Int, outWidth: Int) -> Tensor {
        averagedProbabilities(count: views.count, outHeight: outHeight, outWidth: outWidth) { i in
            (views[i].image.reshaped([1] + views[i].image.shape), views[i].flipped)
        }
    }

    /// The mean over `count` views (1×3×h×w, mirrored) of softmax(resize(unmirror(logits))), 1×K×outH×outW.
    private func averagedProbabilities(count: Int, outHeight: Int, outWidth: Int,
                                       view: (Int) -> (Tensor, Bool)) -> Tensor {
        model.training = false
        let sum = Tensor(zeros: [1, model.config.numClasses, outHeight, outWidth])
        for i in 0..<count {
            let (input, flipped) = view(i)
            var logits = self.logits(input)
            if flipped { logits = horizontallyFlipped(logits) }
            let resized = BilinearResize(alignCorners: model.config.alignCorners)
                .forward(logits, height: outHeight, width: outWidth)
            addInPlace(sum, Softmax(axis: 1).forward(resized))
        }
        let inv = 1 / Float(count)
        for i in 0..<sum.count { sum[i] *= inv }
        return sum
    }

    /// Logits at the input's size: whole image, or mmseg's slide inference (windows of crop_size every stride, the
    /// last window of a row/column aligned to the border, overlapping logits averaged).
    public func logits(_ image: Tensor) -> Tensor {
        let (h, w) = (image.shape[2], image.shape[3])
        let resize = BilinearResize(alignCorners: model.config.alignCorners)
        guard case .slide(let crop, let stride) = mode, h > crop[0] || w > crop[1] else {
            return resize.forward(model.forward(image).ocr, height: h, width: w).clone()
        }
        let k = model.config.numClasses
        let sum = Tensor(zeros: [1, k, h, w])
        var counts = [Float](repeating: 0, count: h * w)
        let rows = max(h - crop[0] + stride[0] - 1, 0) / stride[0] + 1
        let cols = max(w - crop[1] + stride[1] - 1, 0) / stride[1] + 1
        for r in 0..<rows {
            for c in 0..<cols {
                let y2 = min(r * stride[0] + crop[0], h), x2 = min(c * stride[1] + crop[1], w)
                let y1 = max(y2 - crop[0], 0), x1 = max(x2 - crop[1], 0)
                let window = Tensor(zeros: [1, 3, y2 - y1, x2 - x1])
                for ch in 0..<3 {
                    for y in y1..<y2 {
                        (window.data + (ch * (y2 - y1) + y - y1) * (x2 - x1))
                            .update(from: image.data + (ch * h + y) * w + x1, count: x2 - x1)
                    }
                }
                let out = resize.forward(model.forward(window).ocr, height: y2 - y1, width: x2 - x1)
                for ch in 0..<k {
                    for y in y1..<y2 {
                        let src = out.data + (ch * (y2 - y1) + y - y1) * (x2 - x1)
                        let dst = sum.data + (ch * h + y) * w + x1
                        for x in 0..<(x2 - x1) { dst[x] += src[x] }
                    }
                }
                for y in y1..<y2 { for x in x1..<x2 { counts[y * w + x] += 1 } }
            }
        }
        for ch in 0..<k { for j in 0..<(h * w) { sum[ch * h * w + j] /= counts[j] } }
        return sum
    }

    /// Classes per pixel from probabilities 1×K×H×W.
    public static func argmax(_ probabilities: Tensor) -> [Int32] {
        let (k, hw) = (probabilities.shape[1], probabilities.shape[2] * probabilities.shape[3])
        return (0..<hw).map { j in
            var best = probabilities[j], bestClass = 0
            for c in 1..<k where probabilities[c * hw + j] > best { best = probabilities[c * hw + j]; bestClass = c }
            return Int32(bestClass)
        }
    }
}

/// x: N×C×H×W mirrored left–right.
func horizontallyFlipped(_ x: Tensor) -> Tensor {
    let y = Tensor(zeros: x.shape)
    let (rows, w) = (x.count / x.shape[3], x.shape[3])
    for r in 0..<rows {
        let (src, dst) = (x.data + r * w, y.data + r * w)
        for j in 0..<w { dst[j] = src[w - 1 - j] }
    }
    return y
}
