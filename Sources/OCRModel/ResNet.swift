import OCRNN
import OCRTensor

/// One residual block of ResNetV1c (style "pytorch": the stride sits on the 3×3 conv).
/// BasicBlock: 3×3 (stride, dilation) → 3×3; Bottleneck: 1×1 → 3×3 (stride, dilation) → 1×1 (×4 channels).
/// y = ReLU(branch(x) + shortcut(x)), shortcut = downsample (1×1 conv with the stride + BN) or identity.
final class ResidualBlock {
    let convs: [ConvBN]
    let downsample: ConvBN?
    let join = ResidualAddReLU()
    private let store: ParameterStore

    init(_ scope: Scope, inChannels: Int, planes: Int, stride: Int, dilation: Int, bottleneck: Bool,
         residualBNInit: Float) {
        store = scope.store
        var convs: [ConvBN] = []
        func pair(_ i: Int, _ cin: Int, _ cout: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                  dilation: Int = 1, last: Bool) -> ConvBN {
            ConvBN(conv: scope.child("conv\(i)"), bn: scope.child("bn\(i)"), in: cin, out: cout, kernel: kernel,
                   stride: stride, padding: padding, dilation: dilation, relu: !last,
                   bnWeightInit: last ? residualBNInit : 1)
        }
        let outChannels: Int
        if bottleneck {
            outChannels = planes * 4
            convs.append(pair(1, inChannels, planes, kernel: 1, last: false))
            convs.append(pair(2, planes, planes, kernel: 3, stride: stride, padding: dilation, dilation: dilation,
                              last: false))
            convs.append(pair(3, planes, outChannels, kernel: 1, last: true))
        } else {
            // mmseg's BasicBlock dilates only its first conv; the second is a plain 3×3.
            outChannels = planes
            convs.append(pair(1, inChannels, planes, kernel: 3, stride: stride, padding: dilation,
                              dilation: dilation, last: false))
            convs.append(pair(2, planes, planes, kernel: 3, padding: 1, last: true))
        }
        self.convs = convs
        if stride != 1 || inChannels != outChannels {
            downsample = ConvBN(conv: scope.child("downsample.0"), bn: scope.child("downsample.1"),
                                in: inChannels, out: outChannels, kernel: 1, stride: stride, relu: false)
        } else {
            downsample = nil
        }
    }

    /// `producer`: the layer whose ReLU output x is (the previous block's join, a stem pair), when x has no reader
    /// outside this block (not a stage's output); where the store keeps activations in bf16, x is then kept so once
    /// this block's forward is done.
    func forward(_ x: Tensor, producer: KeepsOutputInBF16? = nil) -> Tensor {
        let keepsBF16 = store.keepsActivationsInBF16
        let h = forwardChain(convs, x, keepingBF16: keepsBF16)
        let y = join.forward(h, downsample?.forward(x) ?? x)
        if keepsBF16, let producer {
            let kept = BF16Activation(rounding: x)
            producer.keepOutput(kept)
            for conv in [convs[0].conv, downsample?.conv].compactMap({ $0 }) { conv.keepInput(kept) }
        }
        return y
    }

    /// Blocks in turn from x, each block's input (its predecessor's join output) kept as bf16 once it is done, and
    /// the first one's too when `producer` says whose ReLU output x is.
    static func forward(_ blocks: [ResidualBlock], _ x: Tensor, producer: KeepsOutputInBF16? = nil) -> Tensor {
        var (h, producer) = (x, producer)
        for block in blocks {
            h = block.forward(h, producer: producer)
            producer = block.join
        }
        return h
    }

    func backward(_ dy: Tensor) -> Tensor {
        let d = join.backward(dy)
        var g = d
        for c in convs.reversed() { g = c.backward(g)! }
        addInPlace(g, downsample?.backward(d)! ?? d)
        return g
    }
}

/// ResNetV1c with output stride 8 (mmseg `ResNetV1c`, strides (1,2,1,1), dilations (1,1,2,4), contract_dilation).
/// x: N×3×H×W → [c1, c2, c3, c4] at strides 4, 8, 8, 8 with `config.stageChannels` channels.
final class ResNetV1cD8 {
    let stem: [ConvBN]
    let pool = MaxPool2d(kernel: 3, stride: 2, padding: 1)
    let stages: [[ResidualBlock]]
    private let store: ParameterStore

    init(_ scope: Scope, config: ModelConfig) {
        store = scope.store
        let (base, stemWidth) = (config.baseChannels, config.stemWidth)
        let stemWidths = [(3, stemWidth / 2), (stemWidth / 2, stemWidth / 2), (stemWidth / 2, stemWidth)]
        stem = stemWidths.enumerated().map { i, io in
            ConvBN(conv: scope.child("stem.\(3 * i)"), bn: scope.child("stem.\(3 * i + 1)"), in: io.0, out: io.1,
                   kernel: 3, stride: i == 0 ? 2 : 1, padding: 1, relu: true)
        }
        stem[0].conv.needsInputGradient = false
        let strides = [1, 2, 1, 1], dilations = [1, 1, 2, 4]
        var inChannels = stemWidth
        var stages: [[ResidualBlock]] = []
        for (s, count) in config.blockCounts.enumerated() {
            let planes = base << s
            var blocks: [ResidualBlock] = []
            for b in 0..<count {
                // contract_dilation: the first block of a dilated stage uses half the dilation.
                let dilation = (b == 0 && dilations[s] > 1) ? dilations[s] / 2 : dilations[s]
                blocks.append(ResidualBlock(scope.child("layer\(s + 1).\(b)"), inChannels: inChannels, planes: planes,
                                            stride: b == 0 ? strides[s] : 1, dilation: dilation,
                                            bottleneck: config.usesBottleneck, residualBNInit: config.residualBNInit))
                inChannels = planes * config.expansion
            }
            stages.append(blocks)
        }
        self.stages = stages
    }

    /// Where the store keeps activations in bf16, each stem BN + ReLU output is kept so once its reader (the next
    /// stem convolution, the max pool) is done, and so is each block's input inside a stage.
    func forward(_ x: Tensor) -> [Tensor] {
        let keepsBF16 = store.keepsActivationsInBF16
        let stemOutput = forwardChain(stem, x, keepingBF16: keepsBF16)
        var h = pool.forward(stemOutput)
        if keepsBF16 { keep(BF16Activation(rounding: stemOutput), from: stem[stem.count - 1], for: []) }
        var features: [Tensor] = []
        for stage in stages {
            h = ResidualBlock.forward(stage, h)
            features.append(h)
        }
        return features
    }

    /// Gradients w.r.t. c1..c4 (nil where no head reads that stage) flow back to the stem; the image needs none.
    func backward(_ featureGrads: [Tensor?]) {
        var g: Tensor? = nil
        for s in stride(from: stages.count - 1, through: 0, by: -1) {
            if let extra = featureGrads[s] {
                if let current = g { addInPlace(current, extra) } else { g = extra }
            }
            guard var d = g else { continue }
            for block in stages[s].reversed() { d = block.backward(d) }
            g = d
        }
        guard var d = g else { return }
        d = pool.backward(d)
        for c in stem.reversed() {
            guard let next = c.backward(d) else { break }
            d = next
        }
    }
}
