import OCRNN
import OCRTensor

/// The loss terms of one step, each already multiplied by its weight (total = aux + ocr).
public struct Losses: Equatable {
    public var total: Float
    public var aux: Float
    public var ocr: Float

    public init(total: Float, aux: Float, ocr: Float) {
        self.total = total; self.aux = aux; self.ocr = ocr
    }
}

/// What OCRNet needs of a backbone: image → its outputs, and their gradients back to the stem.
protocol Backbone: AnyObject {
    func forward(_ x: Tensor) -> [Tensor]
    func backward(_ featureGrads: [Tensor?])
}

extension ResNetV1cD8: Backbone {}
extension HRNet: Backbone {}

/// OCRNet: ResNetV1c-D8 backbone, FCN head on c3 giving soft object regions, OCR head on c4; or (mmseg
/// `ocrnet_hr18`) HRNetV2 with both heads on its four branches resized to 1/4 and concatenated. In training the FCN
/// head's first pass feeds the aux loss and its second the OCR head's gather, as mmseg's cascade computes it
/// (`fcnPasses` 1: one pass feeds both, as the paper's code). Keys of `store` are mmseg's state_dict keys.
public final class OCRNet {
    public let config: ModelConfig
    public let store = ParameterStore()
    let backbone: Backbone
    /// HRNet only: the concatenation both heads read.
    let headInput: ResizeConcat?
    let fcnHead: FCNHead
    let ocrHead: OCRHead
    let auxResize: BilinearResize
    let ocrResize: BilinearResize
    let auxLoss: CrossEntropyLoss
    let ocrLoss: CrossEntropyLoss
    public private(set) var features: [Tensor] = []
    public private(set) var auxLogits: Tensor?
    public private(set) var ocrLogits: Tensor?

    /// Builds the network with freshly initialised weights (docs/MODEL.md); `seed` also seeds the dropout masks.
    public init(config: ModelConfig, seed: UInt64 = 0) {
        self.config = config
        let root = store.root
        let channels = config.stageChannels
        let fcnInput: Int, ocrInput: Int
        if let hrnet = config.hrnet {
            backbone = HRNet(root.child("backbone"), config: hrnet, residualBNInit: config.residualBNInit)
            headInput = ResizeConcat(count: channels.count, alignCorners: config.alignCorners)
            (fcnInput, ocrInput) = (channels.reduce(0, +), channels.reduce(0, +))
        } else {
            backbone = ResNetV1cD8(root.child("backbone"), config: config)
            headInput = nil
            (fcnInput, ocrInput) = (channels[2], channels[3])
        }
        fcnHead = FCNHead(root.child("decode_head.0"), inChannels: fcnInput, config: config, seed: seed &+ 1)
        ocrHead = OCRHead(root.child("decode_head.1"), inChannels: ocrInput, config: config, seed: seed &+ 2)
        auxResize = BilinearResize(alignCorners: config.alignCorners)
        ocrResize = BilinearResize(alignCorners: config.alignCorners)
        auxLoss = CrossEntropyLoss(config.auxLoss)
        ocrLoss = CrossEntropyLoss(config.ocrLoss)
        store.finalize()
        store.initialize(seed: seed)
        layoutParametersInBackwardOrder()
    }

    /// Lays the flat buffers out in the order backward finishes each gradient, traced once on a small input in
    /// eval mode (which leaves running statistics and dropout untouched and needs no other replica), so gradient
    /// buckets taken front to back complete in order while backward is still running.
    private func layoutParametersInBackwardOrder() {
        var order: [Parameter] = []
        training = false
        store.gradientReady = { order.append($0) }
        let side = 32   // the 1/8 feature map is then 4×4 (HRNet's 1/32 branch 1×1)
        forward(Tensor(zeros: [1, 3, side, side]))
        _ = loss(LabelMap(shape: [1, side, side], values: Array(repeating: 0, count: side * side)))
        backward()
        store.gradientReady = nil
        training = true
        store.relayout(order: order)
        features = []; auxLogits = nil; ocrLogits = nil
    }

    /// Training forwards run without sample keys (benchmarks, tests): each draws fresh dropout masks.
    private var unkeyedForwards: UInt64 = 0

    public var training: Bool {
        get { store.training }
        set { store.training = newValue }
    }

    /// images: N×3×H×W → (soft-region logits, OCR logits), both N×K×H/8×W/8 (N×K×H/4×W/4 on HRNet).
    /// `sampleKeys` (N, the images' global stream positions) key the dropout masks; without them a training forward
    /// keys them by its own count.
    @discardableResult
    public func forward(_ images: Tensor, sampleKeys: [UInt64]? = nil) -> (aux: Tensor, ocr: Tensor) {
        let n = images.shape[0]
        let keys = sampleKeys ?? (0..<UInt64(n)).map { (unkeyedForwards << 32) | $0 }
        if sampleKeys == nil && training { unkeyedForwards += 1 }
        features = backbone.forward(images)
        let fcn: (aux: Tensor, regions: Tensor), logits: Tensor
        if let headInput {
            let x = headInput.forward(features)
            fcn = fcnHead.forward(x, sampleKeys: keys)
            logits = ocrHead.forward(x, regions: fcn.regions, sampleKeys: keys)
            if store.keepsActivationsInBF16 {   // both heads' first convolutions read the concatenation
                let kept = BF16Activation(rounding: x)
                for conv in [fcnHead.conv.conv, ocrHead.bottleneck.conv] { conv.keepInput(kept) }
            }
        } else {
            fcn = fcnHead.forward(features[2], sampleKeys: keys)
            logits = ocrHead.forward(features[3], regions: fcn.regions, sampleKeys: keys)
        }
        auxLogits = fcn.aux
        ocrLogits = logits
        return (fcn.aux, logits)
    }

    /// Both heads' logits resized to the label size, each head's `loss_decode` (ignore 255) times its loss weight.
    public func loss(_ labels: LabelMap) -> Losses {
        guard let auxLogits, let ocrLogits else { preconditionFailure("loss before forward") }
        let (h, w) = (labels.shape[1], labels.shape[2])
        let aux = auxLoss.forward(auxResize.forward(auxLogits, height: h, width: w), labels) * config.auxLoss.weight
        let ocr = ocrLoss.forward(ocrResize.forward(ocrLogits, height: h, width: w), labels) * config.ocrLoss.weight
        return Losses(total: aux + ocr, aux: aux, ocr: ocr)
    }

    /// Accumulates the gradient of the last `loss` into `store.grads` (zero them first for a fresh step).
    public func backward() {
        let dOCR = ocrResize.backward(ocrLoss.backward(scale: config.ocrLoss.weight))
        let (dc4, dRegions) = ocrHead.backward(dOCR)
        let dAux = auxResize.backward(auxLoss.backward(scale: config.auxLoss.weight))
        let dc3 = fcnHead.backward(aux: dAux, regions: dRegions)
        if let headInput {
            addInPlace(dc3, dc4)   // both heads read the one concatenation
            backbone.backward(headInput.backward(dc3))
        } else {
            backbone.backward([nil, nil, dc3, dc4])
        }
    }

    /// Class per pixel at `height`×`width`: the OCR logits resized to that size (the label's; labels are never
    /// resized) and argmax over classes. Runs in eval mode (running statistics, no dropout) and restores the mode.
    public func predict(_ images: Tensor, height: Int, width: Int) -> LabelMap {
        let wasTraining = training
        training = false
        defer { training = wasTraining }
        let logits = BilinearResize(alignCorners: config.alignCorners)
            .forward(forward(images).ocr, height: height, width: width)
        let (n, k, hw) = (logits.shape[0], logits.shape[1], height * width)
        var classes = [Int32](repeating: 0, count: n * hw)
        for i in 0..<n {
            let base = logits.data + i * k * hw
            for j in 0..<hw {
                var best = base[j], bestClass = 0
                for c in 1..<k where base[c * hw + j] > best { best = base[c * hw + j]; bestClass = c }
                classes[i * hw + j] = Int32(bestClass)
            }
        }
        return LabelMap(shape: [n, height, width], values: classes)
    }

    /// forward, loss and backward of one training step (gradients accumulate).
    public func step(_ images: Tensor, _ labels: LabelMap) -> Losses {
        forward(images)
        let losses = loss(labels)
        backward()
        return losses
    }
}
