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

    public init(classWeights: [Float]? = nil, ignoreIndex: Int32 = 255) {
        self.classWeights = classWeights
        self.ignoreIndex = ignoreIndex
    }

    public func forward(_ logits: Tensor, _ labels: LabelMap) -> Float {
        let (n, k, h, w) = (logits.shape[0], logits.shape[1], logits.shape[2], logits.shape[3])
        precondition(labels.shape == [n, h, w], "labels \(labels.shape) do not match logits \(logits.shape)")
        if let classWeights { precondition(classWeights.count == k, "\(classWeights.count) class weights for \(k) classes") }
        let hw = h * w
        let p = Tensor.reuse(&probabilities, shape: logits.shape)
        self.labels = labels
        var lossSum = 0.0, weightSum = 0.0
        labels.values.withUnsafeBufferPointer { lab in
            for i in 0..<n {
                let x = logits.data + i * k * hw, q = p.data + i * k * hw
                for j in 0..<hw {
                    var m = -Float.infinity
                    for c in 0..<k { m = Swift.max(m, x[c * hw + j]) }
                    var s: Float = 0
                    for c in 0..<k { let e = expf(x[c * hw + j] - m); q[c * hw + j] = e; s += e }
                    let r = 1 / s
                    for c in 0..<k { q[c * hw + j] *= r }
                    let y = lab[i * hw + j]
                    if y == ignoreIndex { continue }
                    precondition(y >= 0 && Int(y) < k, "label \(y) outside 0..<\(k) (and not \(ignoreIndex))")
                    let weight = Double(classWeights?[Int(y)] ?? 1)
                    let logP = Double(x[Int(y) * hw + j] - m) - log(Double(s))
                    lossSum -= weight * logP
                    weightSum += weight
                }
            }
        }
        self.weightSum = weightSum
        // PyTorch returns NaN when every pixel is ignored (0/0); a zero loss with zero gradient is what training wants.
        return weightSum > 0 ? Float(lossSum / weightSum) : 0
    }

    /// The gradient w.r.t. the logits of `scale`·loss (scale = the loss weight times the upstream gradient).
    public func backward(scale: Float = 1) -> Tensor {
        guard let p = probabilities, let labels else { preconditionFailure("cross-entropy backward before forward") }
        let (n, k, hw) = (p.shape[0], p.shape[1], p.shape[2] * p.shape[3])
        let norm = weightSum > 0 ? Double(scale) / weightSum : 0
        labels.values.withUnsafeBufferPointer { lab in
            for i in 0..<n {
                let q = p.data + i * k * hw
                for j in 0..<hw {
                    let y = lab[i * hw + j]
                    if y == ignoreIndex {
                        for c in 0..<k { q[c * hw + j] = 0 }
                        continue
                    }
                    let f = Float(Double(classWeights?[Int(y)] ?? 1) * norm)
                    for c in 0..<k { q[c * hw + j] *= f }
                    q[Int(y) * hw + j] -= f
                }
            }
        }
        return p
    }
}
