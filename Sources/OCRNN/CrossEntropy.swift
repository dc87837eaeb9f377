import Foundation
import OCRTensor

/// mmseg's OHEMPixelSampler: per image batch, keeps the hard pixels and weights the rest 0. With `threshold` a pixel is
/// hard when its true-class probability is below max(threshold, the (minKept·N)-th smallest such probability);
/// without it the minKept·N pixels of largest loss are kept. Ignored pixels are never kept.
public struct HardPixelSampler: Equatable, Sendable {
    public var threshold: Float?
    public var minKept: Int

    public init(threshold: Float?, minKept: Int) {
        self.threshold = threshold
        self.minKept = minKept
    }
}

/// Per-pixel cross-entropy as mmseg's `CrossEntropyLoss` reduces it: logits N×K×H×W, labels N×H×W,
///   loss = Σ_pixels w[y]·s·(−log p_y) / (A + ε),   ε = float32 epsilon (mmseg's guard against A = 0),
/// where pixels labelled `ignoreIndex` contribute 0, s is the hard-pixel weight (1 without a sampler) and A is
///   - N·H·W, every pixel including the ignored ones (mmseg's default `avg_non_ignore=False`);
///   - the number of non-ignored pixels with `averageOverNonIgnored` (PyTorch's mean);
///   - Σ w[y] over non-ignored pixels with class weights (mmseg's value whenever no pixel is ignored; with ignored
///     pixels mmseg 1.2.2 indexes its class weights by 255 and raises, so this is PyTorch's weighted mean).
/// Backward: dlogits = w[y]·s·(p − onehot(y)) / (A + ε) · dloss.
public final class CrossEntropyLoss {
    public let classWeights: [Float]?
    public let ignoreIndex: Int32
    public let averageOverNonIgnored: Bool
    public let sampler: HardPixelSampler?
    /// Holds softmax probabilities after forward, turned into the gradient in place by backward.
    private var probabilities: Tensor?
    private var labels: LabelMap?
    /// Hard-pixel weights s (N·H·W) of the last forward; nil without a sampler.
    private var pixelWeights: [Float]?
    private var denominator = 1.0
    /// Pixels per unit of parallel work (and of the loss's partial sums).
    static let pixelBlock = 1024

    public init(classWeights: [Float]? = nil, ignoreIndex: Int32 = 255, averageOverNonIgnored: Bool = false,
                sampler: HardPixelSampler? = nil) {
        self.classWeights = classWeights
        self.ignoreIndex = ignoreIndex
        self.averageOverNonIgnored = averageOverNonIgnored
        self.sampler = sampler
    }

    public func forward(_ logits: Tensor, _ labels: LabelMap) -> Float {
        let timing = Profiler.begin(); defer { Profiler.end("CrossEntropyLoss.forward", timing) }
        let (n, k, h, w) = (logits.shape[0], logits.shape[1], logits.shape[2], logits.shape[3])
        precondition(labels.shape == [n, h, w], "labels \(labels.shape) do not match logits \(logits.shape)")
        if let classWeights { precondition(classWeights.count == k, "\(classWeights.count) class weights for \(k) classes") }
        let hw = h * w
        let p = Tensor.reuse(&probabilities, shape: logits.shape)
        self.labels = labels
        // Per-pixel losses w[y]·(−log p_y) are kept only when a sampler has to rank them.
        var pixelLosses = sampler == nil ? [] : [Float](repeating: 0, count: n * hw)
        // Pixels go in fixed blocks of each image, in parallel; each block's (loss, weight, count) sums are added in
        // block order afterwards, so the result does not depend on the thread count.
        let blocksPerImage = (hw + Self.pixelBlock - 1) / Self.pixelBlock
        var blockSums = [Double](repeating: 0, count: 3 * n * blocksPerImage)
        let (ignore, weights) = (ignoreIndex, classWeights)
        labels.values.withUnsafeBufferPointer { lab in
            blockSums.withUnsafeMutableBufferPointer { blockSums in
                pixelLosses.withUnsafeMutableBufferPointer { pixelLosses in
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
                                    let (row, out) = (x + c * hw, q + c * hw)
                                    PlaneSums.forEach(count: count, lanes: { j in
                                        let e = VectorExp.exp(PlaneSums.load(row + j) - PlaneSums.load(maxima + j))
                                        PlaneSums.store(e, out + j)
                                        PlaneSums.store(PlaneSums.load(sums + j) + e, sums + j)
                                    }, single: { j in
                                        let e = VectorExp.exp(row[j] - maxima[j])
                                        out[j] = e
                                        sums[j] += e
                                    })
                                }
                                for c in 0..<k {
                                    for j in 0..<count { q[c * hw + j] /= sums[j] }
                                }
                                var (lossSum, weightSum, counted) = (0.0, 0.0, 0.0)
                                for j in 0..<count {
                                    let y = lab[i * hw + j0 + j]
                                    if y == ignore { continue }
                                    precondition(y >= 0 && Int(y) < k, "label \(y) outside 0..<\(k) (and not \(ignore))")
                                    let weight = Double(weights?[Int(y)] ?? 1)
                                    let logP = Double(x[Int(y) * hw + j] - maxima[j]) - log(Double(sums[j]))
                                    lossSum -= weight * logP
                                    weightSum += weight
                                    counted += 1
                                    if !pixelLosses.isEmpty { pixelLosses[i * hw + j0 + j] = Float(-weight * logP) }
                                }
                                blockSums[3 * b] = lossSum
                                blockSums[3 * b + 1] = weightSum
                                blockSums[3 * b + 2] = counted
                            }
                        }
                    }
                }
            }
        }
        var (lossSum, weightSum, counted) = (0.0, 0.0, 0.0)
        for b in 0..<(n * blocksPerImage) {
            lossSum += blockSums[3 * b]
            weightSum += blockSums[3 * b + 1]
            counted += blockSums[3 * b + 2]
        }
        let factor = classWeights != nil ? weightSum : averageOverNonIgnored ? counted : Double(n * hw)
        denominator = factor + Double(Float.ulpOfOne)
        pixelWeights = nil
        if let sampler {
            let kept = hardPixels(sampler, probabilities: p, losses: pixelLosses, labels: labels.values)
            lossSum = 0
            for (loss, keep) in zip(pixelLosses, kept) where keep != 0 { lossSum += Double(loss) }
            pixelWeights = kept
        }
        return Float(lossSum / denominator)
    }

    /// The sampler's 0/1 weight per pixel: N·H·W, from this forward's probabilities (N×K×H×W) or pixel losses.
    private func hardPixels(_ sampler: HardPixelSampler, probabilities p: Tensor, losses: [Float],
                            labels: [Int32]) -> [Float] {
        let (n, k, hw) = (p.shape[0], p.shape[1], p.shape[2] * p.shape[3])
        let batchKept = sampler.minKept * n
        var valid: [Int] = []
        valid.reserveCapacity(labels.count)
        for (index, y) in labels.enumerated() where y != ignoreIndex { valid.append(index) }
        var kept = [Float](repeating: 0, count: labels.count)
        guard !valid.isEmpty else { return kept }
        if let threshold = sampler.threshold {
            // True-class probability per valid pixel; the bar is the batchKept-th smallest, at least `threshold`.
            let trueClass = valid.map { index in p.data[(index / hw) * k * hw + Int(labels[index]) * hw + index % hw] }
            let sorted = trueClass.sorted()
            let bar = Swift.max(sorted[Swift.min(batchKept, sorted.count - 1)], threshold)
            for (index, probability) in zip(valid, trueClass) where probability < bar { kept[index] = 1 }
        } else {
            let hardest = valid.sorted { losses[$0] > losses[$1] }
            for index in hardest.prefix(batchKept) { kept[index] = 1 }
        }
        return kept
    }

    /// The gradient w.r.t. the logits of `scale`·loss (scale = the loss weight times the upstream gradient).
    public func backward(scale: Float = 1) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("CrossEntropyLoss.backward", timing) }
        guard let p = probabilities, let labels else { preconditionFailure("cross-entropy backward before forward") }
        let (n, k, hw) = (p.shape[0], p.shape[1], p.shape[2] * p.shape[3])
        let norm = Double(scale) / denominator
        let blocksPerImage = (hw + Self.pixelBlock - 1) / Self.pixelBlock
        let (ignore, weights, hardPixels) = (ignoreIndex, classWeights, pixelWeights)
        labels.values.withUnsafeBufferPointer { lab in
            parallelChunks(n * blocksPerImage) { b0, b1 in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: Self.pixelBlock) { scratch in
                    let factors = scratch.baseAddress!
                    for b in b0..<b1 {
                        let (i, j0) = (b / blocksPerImage, (b % blocksPerImage) * Self.pixelBlock)
                        let count = Swift.min(hw, j0 + Self.pixelBlock) - j0
                        let (q, lab) = (p.data + i * k * hw + j0, lab.baseAddress! + i * hw + j0)
                        // dlogits = f·(p − onehot(y)) with f = w[y]·s·norm per pixel, 0 where ignored.
                        for j in 0..<count {
                            let kept = Double(hardPixels?[i * hw + j0 + j] ?? 1)
                            factors[j] = lab[j] == ignore ? 0 : Float(Double(weights?[Int(lab[j])] ?? 1) * kept * norm)
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
