import OCRNN

/// A decode head's `loss_decode` (mmseg `CrossEntropyLoss`: `loss_weight`, `class_weight`, `avg_non_ignore`) and
/// its `sampler` (`OHEMPixelSampler`), with mmseg's defaults.
public struct HeadLoss: Equatable, Sendable {
    public var weight: Float
    public var classWeights: [Float]? = nil
    /// Average over the non-ignored pixels only; mmseg's default (false) divides by every pixel.
    public var averageOverNonIgnored = false
    public var sampler: HardPixelSampler? = nil

    public init(weight: Float) { self.weight = weight }
}

extension CrossEntropyLoss {
    convenience init(_ loss: HeadLoss) {
        self.init(classWeights: loss.classWeights, averageOverNonIgnored: loss.averageOverNonIgnored,
                  sampler: loss.sampler)
    }
}

/// The numbers that define an OCRNet (ResNetV1c-D8 or HRNetV2 backbone, FCN + OCR heads). Defaults are mmseg's
/// `ocrnet_r50-d8` on Cityscapes; `hrnet(_:)` gives `ocrnet_hr18`'s; the YAML config maps onto these fields.
public struct ModelConfig: Equatable, Sendable {
    /// When set, the backbone is this HRNet (`model.backbone.type: HRNet`, its `extra` block) and the heads read
    /// all four branches resized to 1/4 and concatenated; `depth` and `baseChannels` are then ignored.
    public var hrnet: HRNetConfig? = nil
    /// ResNet depth: 18, 34 (BasicBlock) or 50, 101 (Bottleneck).
    public var depth = 50
    /// The planes of layer1 (planes of stage i = base·2^i).
    public var baseChannels = 64
    /// Output width of the three-conv stem (mmseg `stem_channels`; its convs are width/2, width/2, width); nil = the
    /// base width, as our configs have always meant it.
    public var stemChannels: Int? = nil
    public var stemWidth: Int { stemChannels ?? baseChannels }
    public var numClasses = 19
    /// FCNHead `channels` (decode_head.0).
    public var fcnChannels = 256
    /// FCNHead `kernel_size` of its conv (3 on ResNet, 1 on HRNet).
    public var fcnKernelSize = 3
    /// OCRHead `channels` (decode_head.1) and `ocr_channels` (the attention width).
    public var ocrChannels = 512
    public var ocrMidChannels = 256
    public var fcnDropout: Float = 0.1
    public var ocrDropout: Float = 0.1
    /// FCN head (aux, decode_head.0) and OCR head (decode_head.1) losses, summed with their weights 0.4 and 1.0.
    public var auxLoss = HeadLoss(weight: 0.4)
    public var ocrLoss = HeadLoss(weight: 1.0)
    /// FCN head passes per training step: 2 as mmseg's cascade (one for the aux loss, one feeding the OCR head:
    /// BN running statistics move twice, the OCR head sees a second dropout mask); 1 as the paper's code.
    public var fcnPasses = 2
    public var alignCorners = false
    /// γ of the last BN in each residual block at initialisation (0 = mmseg's zero_init_residual).
    public var residualBNInit: Float = 0

    public init() {}

    /// mmseg's `ocrnet_hr18` head settings on `backbone`: the FCN head is a 1×1 ConvModule as wide as the
    /// concatenated branches, neither head has dropout, and the residual BNs start at γ = 1 (mmseg's HRNet does not
    /// zero-initialise them).
    public static func hrnet(_ backbone: HRNetConfig, numClasses: Int = 19) -> ModelConfig {
        var c = ModelConfig()
        c.hrnet = backbone
        c.numClasses = numClasses
        c.fcnChannels = backbone.outChannels.reduce(0, +)
        c.fcnKernelSize = 1
        c.fcnDropout = 0
        c.ocrDropout = 0
        c.residualBNInit = 1
        return c
    }

    public var blockCounts: [Int] {
        switch depth {
        case 18: [2, 2, 2, 2]
        case 34: [3, 4, 6, 3]
        case 50: [3, 4, 6, 3]
        case 101: [3, 4, 23, 3]
        case 152: [3, 8, 36, 3]
        default: preconditionFailure("unsupported ResNet depth \(depth) (expected 18, 34, 50, 101 or 152)")
        }
    }

    /// The side of the smallest feature map for an input side (ResNet-D8: c4 at stride 8; HRNet: its stride-32
    /// branch), as the stride-2 convolutions round: ⌈x/2⌉ per halving.
    public func smallestFeatureSide(_ side: Int) -> Int {
        var x = side
        for _ in 0..<(hrnet == nil ? 3 : 5) { x = (x + 1) / 2 }
        return x
    }

    /// The backbone as mmseg's config names say it: "HRNetV2-W18" (the first branch's width) or "ResNetV1c-50-D8".
    public var backboneName: String {
        if let hrnet { return "HRNetV2-W\(hrnet.outChannels.first ?? 0)" }
        return "ResNetV1c-\(depth)-D8"
    }

    public var usesBottleneck: Bool { depth >= 50 }
    public var expansion: Int { usesBottleneck ? 4 : 1 }
    /// Output channels of layer1..layer4 (of the four HRNet branches when `hrnet` is set).
    public var stageChannels: [Int] {
        hrnet?.outChannels ?? (0..<4).map { baseChannels * (1 << $0) * expansion }
    }

    /// The widest layer a config may ask for (mmseg's widest is 2048): a typo must not allocate terabytes.
    public static let maximumWidth = 1 << 14

    /// Checks what a config file could get wrong; the message names the offending field.
    public func validate() throws {
        struct Invalid: Error, CustomStringConvertible { let description: String }
        guard [18, 34, 50, 101, 152].contains(depth) else {
            throw Invalid(description: "model.backbone.depth: \(depth) is not one of 18, 34, 50, 101, 152")
        }
        guard baseChannels >= 2, baseChannels % 2 == 0 else {
            throw Invalid(description: "model.backbone.base_channels: \(baseChannels) must be an even number ≥ 2")
        }
        if let stemChannels, stemChannels < 2 || stemChannels % 2 != 0 {
            throw Invalid(description: "model.backbone.stem_channels: \(stemChannels) must be an even number ≥ 2")
        }
        try hrnet?.validate()
        for (key, width) in [("backbone.base_channels", baseChannels), ("backbone.stem_channels", stemWidth),
                             ("decode_head.0.channels", fcnChannels), ("decode_head.1.channels", ocrChannels),
                             ("decode_head.1.ocr_channels", ocrMidChannels)]
        where !(1...Self.maximumWidth).contains(width) {
            throw Invalid(description: "model.\(key): \(width) must be in 1…\(Self.maximumWidth)")
        }
        guard [1, 3].contains(fcnKernelSize) else {
            throw Invalid(description: "model.decode_head.0.kernel_size: \(fcnKernelSize) is not 1 or 3")
        }
        // The OCR head's key/value BN normalises over N·K values, and softmax cross-entropy needs two classes.
        guard numClasses >= 2 else { throw Invalid(description: "model.num_classes: \(numClasses) must be ≥ 2") }
        for (key, value) in [("decode_head.0.dropout_ratio", fcnDropout), ("decode_head.1.dropout_ratio", ocrDropout)]
        where !(0..<1).contains(value) {
            throw Invalid(description: "model.\(key): \(value) must be in [0, 1) (≤ 0 in a config means none)")
        }
        guard [1, 2].contains(fcnPasses) else {
            throw Invalid(description: "model.train_cfg.fcn_passes: \(fcnPasses) is not 1 or 2")
        }
        for (head, loss) in [(0, auxLoss), (1, ocrLoss)] {
            let key = "model.decode_head.\(head)"
            if let classWeights = loss.classWeights, classWeights.count != numClasses {
                throw Invalid(description: "\(key).loss_decode.class_weight: \(classWeights.count) weights for "
                              + "\(numClasses) classes")
            }
            guard loss.weight.isFinite else {
                throw Invalid(description: "\(key).loss_decode.loss_weight: \(loss.weight) is not a finite number")
            }
            if let sampler = loss.sampler {
                guard sampler.minKept >= 1 else {
                    throw Invalid(description: "\(key).sampler.min_kept: \(sampler.minKept) must be ≥ 1")
                }
                if let threshold = sampler.threshold, !(threshold.isFinite && threshold > 0) {
                    throw Invalid(description: "\(key).sampler.thresh: \(threshold) must be a positive probability")
                }
            }
        }
    }
}
