import Foundation
import OCRTensor

/// Per-pixel cross-entropy with PyTorch `F.cross_entropy` semantics: logits N×K×H×W, labels N×H×W; pixels labelled
/// `ignoreIndex` contribute nothing; with class weights w, loss = Σ w[y]·(−log p_y) / Σ w[y] over the counted
/// pixels (plain mean without weights). Backward: dlogits = w[y]·(p − onehot(y)) / Σ w[y] · dloss.
public final class CrossEntropyLoss {
    public let classWeights: [Float]?
    public let ignoreIndex: Int32
    /// Holds softmax probabilities after forward, turned into the gradient in place by backward.
    private var probabilities: Tensor?
    private var labels: LabelMap?
    private var weightSum = 0.0
    /// Pixels per unit of parallel work (and of the loss's partial sums).
    static let pixelBlock = 1024

    public init(classWeights: [Float]? = nil, ignoreIndex: Int32 = 255) {
        self.classWeights = classWeights
        self.ignoreIndex = ignoreIndex
    }

    public func forward(_ logits: Tensor, _ labels: LabelMap) -> Float {
        let timing = Profiler.begin(); defer { Profiler.end("CrossEntropyLoss.forward", timing) }
        let (n, k, h, w) = (logits.shape[0], logits.shape[1], logits.shape[2], logits.shape[3])
        precondition(labels.shape == [n, h, w], "labels \(labels.shape) do not match logits \(logits.shape)")
        if let classWeights { precondition(classWeights.count == k, "\(classWeights.count) class weights for \(k) classes") }
        let hw = h * w
        let p = Tensor.reuse(&probabilities, shape: logits.shape)
        self.labels = labels
        // Pixels go in fixed blocks of each image, in parallel; each block's (loss, weight) sums are added in block
        // order afterwards, so the result does not depend on the thread count.
        let blocksPerImage = (hw + Self.pixelBlock - 1) / Self.pixelBlock
        var blockSums = [Double](repeating: 0, count: 2 * n * blocksPerImage)
        let (ignore, weights) = (ignoreIndex, classWeights)
        labels.values.withUnsafeBufferPointer { lab in
            blockSums.withUnsafeMutableBufferPointer { blockSums in
                parallelChunks(n * blocksPerImage) { b0, b1 in
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * Self.pixelBlock) { scratch in
                        let (maxima, sums) = (scratch.baseAddress!, scratch.baseAddress! + Self.pixelBlock)
                        for b in b0..<b1 {
                            let (i, j0) = (b / blocksPerImage, (b % blocksPerImage) * Self.pixelBlock)
                            let count = Swift.min(hw, j0 + Self.pixelBlock) - j0
                            // Softmax over classes, class by class so the pixel loops vectorise.
                            let x = logits.data + i * k * hw + j0, q = p.data + i * k * hw + j0
                            maxima.update(repeating: -.infinity, count: count)
                            sums.update(repeating: 0, count: count)
                            for c in 0..<k {
                                for j in 0..<count { maxima[j] = Swift.max(maxima[j], x[c * hw + j]) }
                            }
                            for c in 0..<k {
                                for j in 0..<count {
                                    let e = expf(x[c * hw + j] - maxima[j])
                                    q[c * hw + j] = e
                                    sums[j] += e
                                }
                            }
                            for c in 0..<k {
                                for j in 0..<count { q[c * hw + j] /= sums[j] }
                            }
                            var (lossSum, weightSum) = (0.0, 0.0)
                            for j in 0..<count {
                                let y = lab[i * hw + j0 + j]
                                if y == ignore { continue }
                                precondition(y >= 0 && Int(y) < k, "label \(y) outside 0..<\(k) (and not \(ignore))")
                                let weight = Double(weights?[Int(y)] ?? 1)
                                let logP = Double(x[Int(y) * hw + j] - maxima[j]) - log(Double(sums[j]))
                                lossSum -= weight * logP
                                weightSum += weight
                            }
                            blockSums[2 * b] = lossSum
                            blockSums[2 * b + 1] = weightSum
                        }
                    }
                }
            }
        }
        var (lossSum, weightSum) = (0.0, 0.0)
        for b in 0..<(n * blocksPerImage) {
            lossSum += blockSums[2 * b]
            weightSum += blockSums[2 * b + 1]
        }
        self.weightSum = weightSum
        // PyTorch returns NaN when every pixel is ignored (0/0); a zero loss with zero gradient is what training wants.
        return weightSum > 0 ? Float(lossSum / weightSum) : 0
    }

    /// The gradient w.r.t. the logits of `scale`·loss (scale = the loss weight times the upstream gradient).
    public func backward(scale: Float = 1) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("CrossEntropyLoss.backward", timing) }
        guard let p = probabilities, let labels else { preconditionFailure("cross-entropy backward before forward") }
        let (n, k, hw) = (p.shape[0], p.shape[1], p.shape[2] * p.shape[3])
        let norm = weightSum > 0 ? Double(scale) / weightSum : 0
        let blocksPerImage = (hw + Self.pixelBlock - 1) / Self.pixelBlock
        let (ignore, weights) = (ignoreIndex, classWeights)
        labels.values.withUnsafeBufferPointer { lab in
            parallelChunks(n * blocksPerImage) { b0, b1 in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: Self.pixelBlock) { scratch in
                    let factors = scratch.baseAddress!
                    for b in b0..<b1 {
                        let (i, j0) = (b / blocksPerImage, (b % blocksPerImage) * Self.pixelBlock)
                        let count = Swift.min(hw, j0 + Self.pixelBlock) - j0
                        let (q, lab) = (p.data + i * k * hw + j0, lab.baseAddress! + i * hw + j0)
                        // dlogits = f·(p − onehot(y)) with f = w[y]·norm per pixel, 0 where ignored.
                        for j in 0..<count {
                            factors[j] = lab[j] == ignore ? 0 : Float(Double(weights?[Int(lab[j])] ?? 1) * norm)
                        }
                        for c in 0..<k {
                            for j in 0..<count { q[c * hw + j] *= factors[j] }
                        }
                        for j in 0..<count where lab[j] != ignore { q[Int(lab[j]) * hw + j] -= factors[j] }
                    }
                }
            }
        }
        return p
    }
}
