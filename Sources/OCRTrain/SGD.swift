import OCRNN
import OCRTensor

/// Stochastic gradient descent with momentum and weight decay, PyTorch `torch.optim.SGD` semantics (dampening 0,
/// no Nesterov): g = ∇ + wd·w; buf = momentum·buf + g (buf starts at g); w −= lr·buf. One loop over the flat buffers.
public final class SGD {
    public var learningRate: Float
    public let momentum: Float
    public let weightDecay: Float
    /// Momentum buffers in the store's flat layout.
    public let momentumBuffer: Tensor

    public init(store: ParameterStore, learningRate: Float, momentum: Float = 0.9, weightDecay: Float = 0.0005) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        momentumBuffer = Tensor(zeros: [store.parameterCount])
        self.store = store
    }

    private let store: ParameterStore

    public func step() {
        let (w, g, buf) = (store.values.data, store.grads.data, momentumBuffer.data)
        let (lr, mu, wd) = (learningRate, momentum, weightDecay)
        parallelChunks(momentumBuffer.count, minimumPerChunk: 1 << 16) { s, e in
            for i in s..<e {
                let d = g[i] + wd * w[i]
                let v = mu * buf[i] + d
                buf[i] = v
                w[i] -= lr * v
            }
        }
    }
}
