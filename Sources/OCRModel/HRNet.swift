import OCRNN
import OCRTensor

/// The residual block type of an HRNet stage (mmseg's `block` field).
public enum HRNetBlock: String, Equatable, Sendable {
    case basic = "BASIC"
    case bottleneck = "BOTTLENECK"

    var expansion: Int { self == .bottleneck ? 4 : 1 }
}

/// One stage of mmseg's HRNet `extra` block: `num_modules` HR modules of `num_branches` parallel branches, branch
/// i a stack of `num_blocks[i]` blocks of width `num_channels[i]` (times the block's expansion).
public struct HRNetStage: Equatable, Sendable {
    public var numModules: Int
    public var numBranches: Int
    public var block: HRNetBlock
    public var numBlocks: [Int]
    public var numChannels: [Int]

    public init(numModules: Int, numBranches: Int, block: HRNetBlock, numBlocks: [Int], numChannels: [Int]) {
        self.numModules = numModules; self.numBranches = numBranches; self.block = block
        self.numBlocks = numBlocks; self.numChannels = numChannels
    }

    /// Output channels of each branch.
    public var branchChannels: [Int] { numChannels.map { $0 * block.expansion } }
}

/// mmseg's HRNet `extra`: stage1 (the Bottleneck `layer1`) and stages 2–4 (HR modules).
public struct HRNetConfig: Equatable, Sendable {
    public var stages: [HRNetStage]

    public init(stages: [HRNetStage]) { self.stages = stages }

    /// The HRNetV2 family as mmseg's `ocrnet_hr18` base config writes it, with `width` the channels of the
    /// highest-resolution branch (18, 48), `blocks` per branch and the module counts of stages 3 and 4.
    public static func v2(width: Int, blocks: Int = 4, stage3Modules: Int = 4, stage4Modules: Int = 3) -> HRNetConfig {
        let widths = (0..<4).map { width << $0 }
        return HRNetConfig(stages: [
            HRNetStage(numModules: 1, numBranches: 1, block: .bottleneck, numBlocks: [blocks], numChannels: [64]),
            HRNetStage(numModules: 1, numBranches: 2, block: .basic, numBlocks: [blocks, blocks],
                       numChannels: Array(widths[..<2])),
            HRNetStage(numModules: stage3Modules, numBranches: 3, block: .basic,
                       numBlocks: Array(repeating: blocks, count: 3), numChannels: Array(widths[..<3])),
            HRNetStage(numModules: stage4Modules, numBranches: 4, block: .basic,
                       numBlocks: Array(repeating: blocks, count: 4), numChannels: widths),
        ])
    }

    /// HRNetV2-W18-small (mmseg `hr18s`): 2 blocks per branch, 3 and 2 modules in stages 3 and 4.
    public static let w18Small = v2(width: 18, blocks: 2, stage3Modules: 3, stage4Modules: 2)
    public static let w18 = v2(width: 18)
    public static let w48 = v2(width: 48)

    /// Channels of the four backbone outputs (strides 4, 8, 16, 32).
    public var outChannels: [Int] { stages.last?.branchChannels ?? [] }

    /// The most modules per stage or blocks per branch a config may ask for (mmseg's HRNets use at most 4).
    public static let maximumRepeats = 64

    /// Checks what a config file could get wrong; the message names the offending field.
    public func validate() throws {
        struct Invalid: Error, CustomStringConvertible { let description: String }
        guard stages.count == 4 else {
            throw Invalid(description: "model.backbone.extra: \(stages.count) stages given, HRNet has stage1..stage4")
        }
        for (s, stage) in stages.enumerated() {
            let key = "model.backbone.extra.stage\(s + 1)"
            // The heads read branches (0, 1, 2, 3) and stage k adds the k-th branch, as every mmseg HRNet does.
            guard stage.numBranches == s + 1 else {
                throw Invalid(description: "\(key).num_branches: \(stage.numBranches), expected \(s + 1)")
            }
            guard stage.numBlocks.count == stage.numBranches, stage.numChannels.count == stage.numBranches else {
                throw Invalid(description: "\(key): num_blocks and num_channels need \(stage.numBranches) entries")
            }
            guard (1...Self.maximumRepeats).contains(stage.numModules),
                  stage.numBlocks.allSatisfy({ (1...Self.maximumRepeats).contains($0) }),
                  stage.numChannels.allSatisfy({ (1...ModelConfig.maximumWidth).contains($0) }) else {
                throw Invalid(description: "\(key): num_modules and num_blocks must be in 1…\(Self.maximumRepeats), "
                              + "num_channels in 1…\(ModelConfig.maximumWidth)")
            }
            // mmseg feeds every transition the last branch of the previous stage, which only type-checks when the
            // branches that continue keep their width (always so in stages 3 and 4 of published configs).
            if s >= 2, Array(stage.branchChannels[..<s]) != stages[s - 1].branchChannels {
                throw Invalid(description: "\(key).num_channels: the first \(s) branches must keep the widths "
                              + "\(stages[s - 1].branchChannels) of stage\(s)")
            }
        }
    }
}

/// Gradients that reach one tensor from several consumers, summed into buffers of their own (so no layer's own
/// gradient is overwritten). Call `begin` once per backward pass.
final class GradientSums {
    private var buffers: [Tensor?]
    private var started: [Bool]

    init(count: Int) {
        buffers = Array(repeating: nil, count: count)
        started = Array(repeating: false, count: count)
    }

    func begin() {
        started = started.map { _ in false }
        buffers = buffers.map { _ in nil }
    }

    func add(_ gradient: Tensor, to slot: Int) {
        if started[slot], let sum = buffers[slot] {
            addInPlace(sum, gradient)
        } else {
            let sum = Tensor.transient(shape: gradient.shape)
            sum.copy(from: gradient)
            buffers[slot] = sum
        }
        started[slot] = true
    }

    /// The sum for `slot`, handed over: the caller holds it from here.
    func result(_ slot: Int) -> Tensor {
        precondition(started[slot], "no gradient reached input \(slot)")
        defer { buffers[slot] = nil }
        return buffers[slot]!
    }
}

/// How branch j reaches output i of an HR module (mmseg `fuse_layers.i.j`):
///   j > i (lower resolution): 1×1 conv + BN (keys `.0`, `.1`), bilinear ×2^(j−i), and, when that does not land on
///         branch i's size (odd sizes), a second bilinear resize to it, as mmseg's Upsample + `resize` do;
///   j < i (higher resolution): i−j 3×3 stride-2 conv + BN steps (keys `.k.0`, `.k.1`), ReLU after all but the last;
///         the last one changes the width to branch i's.
/// x_j: N×C_j×H_j×W_j → N×C_i×H_i×W_i.
final class FusePath {
    let convs: [ConvBN]
    let upscale: Int
    let upsample = BilinearResize(alignCorners: false)
    let fitToBranch = BilinearResize(alignCorners: false)
    private var fitted = false
    private let store: ParameterStore

    init(_ scope: Scope, from j: Int, to i: Int, channels: [Int]) {
        store = scope.store
        if j > i {
            convs = [ConvBN(conv: scope.child("0"), bn: scope.child("1"), in: channels[j], out: channels[i],
                            kernel: 1, relu: false)]
            upscale = 1 << (j - i)
        } else {
            convs = (0..<(i - j)).map { k in
                let last = k == i - j - 1
                return ConvBN(conv: scope.child("\(k).0"), bn: scope.child("\(k).1"), in: channels[j],
                              out: last ? channels[i] : channels[j], kernel: 3, stride: 2, padding: 1, relu: !last)
            }
            upscale = 1
        }
    }

    func forward(_ x: Tensor, height: Int, width: Int) -> Tensor {
        var h = forwardChain(convs, x, keepingBF16: store.keepsActivationsInBF16)
        guard upscale > 1 else { return h }
        h = upsample.forward(h, height: h.shape[2] * upscale, width: h.shape[3] * upscale)
        fitted = h.shape[2] != height || h.shape[3] != width
        return fitted ? fitToBranch.forward(h, height: height, width: width) : h
    }

    func backward(_ dy: Tensor) -> Tensor {
        var g = dy
        if upscale > 1 {
            if fitted { g = fitToBranch.backward(g) }
            g = upsample.backward(g)
        }
        for c in convs.reversed() { g = c.backward(g)! }
        return g
    }
}

/// mmseg `HRModule`: each branch runs its block stack, then every output i is ReLU(Σ_j fuse_ij(branch_j)) with
/// fuse_ii the identity. [N×C_i×H/2^i×W/2^i] → same shapes.
final class HRModule {
    let branches: [[ResidualBlock]]
    /// paths[i][j] for j ≠ i; nil on the diagonal.
    let paths: [[FusePath?]]
    let sums: [ResidualAddReLU]
    let branchGrads: GradientSums
    private let store: ParameterStore

    init(_ scope: Scope, stage: HRNetStage, inChannels: [Int], residualBNInit: Float) {
        store = scope.store
        let n = stage.numBranches
        let outChannels = stage.branchChannels
        branches = (0..<n).map { i in
            (0..<stage.numBlocks[i]).map { b in
                ResidualBlock(scope.child("branches.\(i).\(b)"), inChannels: b == 0 ? inChannels[i] : outChannels[i],
                              planes: stage.numChannels[i], stride: 1, dilation: 1,
                              bottleneck: stage.block == .bottleneck, residualBNInit: residualBNInit)
            }
        }
        paths = (0..<n).map { i in
            (0..<n).map { j in
                j == i ? nil : FusePath(scope.child("fuse_layers.\(i).\(j)"), from: j, to: i, channels: outChannels)
            }
        }
        sums = (0..<n).map { _ in ResidualAddReLU() }
        branchGrads = GradientSums(count: n)
    }

    /// `producers[i]`: the layer whose ReLU output input i is, when nothing outside this module reads it later
    /// (`ResidualBlock.forward`); in bf16 training such an input is kept as bf16 once branch i's first block has
    /// run, and every branch output once the fused sums are formed.
    func forward(_ inputs: [Tensor], producers: [KeepsOutputInBF16?]) -> [Tensor] {
        let branchOutputs = branches.indices.map { i in
            ResidualBlock.forward(branches[i], inputs[i], producer: producers[i])
        }
        let outputs = sums.indices.map { i in
            let (height, width) = (branchOutputs[i].shape[2], branchOutputs[i].shape[3])
            let terms = branchOutputs.indices.map { j in
                paths[i][j]?.forward(branchOutputs[j], height: height, width: width) ?? branchOutputs[j]
            }
            return sums[i].forward(terms)
        }
        if store.keepsActivationsInBF16 {
            // Branch j's output: the mask of its last join, and the input of the fuse paths that start from it.
            for (j, output) in branchOutputs.enumerated() {
                let kept = BF16Activation(rounding: output)
                branches[j][branches[j].count - 1].join.keepOutput(kept)
                for i in paths.indices { paths[i][j]?.convs[0].conv.keepInput(kept) }
            }
        }
        return outputs
    }

    func backward(_ outputGrads: [Tensor]) -> [Tensor] {
        branchGrads.begin()
        for i in sums.indices {
            let dSum = sums[i].backward(outputGrads[i])
            for j in branches.indices {
                branchGrads.add(paths[i][j]?.backward(dSum) ?? dSum, to: j)
            }
        }
        return branches.indices.map { j in
            branches[j].reversed().reduce(branchGrads.result(j)) { g, block in block.backward(g) }
        }
    }
}

/// mmseg `transition{s}`: from the previous stage's branches to this stage's. A branch that continues passes
/// through, or (when its width changes) goes through a 3×3 conv + BN + ReLU (keys `i.0`, `i.1`); each new branch
/// is made from the previous stage's last branch by 3×3 stride-2 conv + BN + ReLU steps (keys `i.k.0`, `i.k.1`).
final class Transition {
    let layers: [[ConvBN]]
    let previousCount: Int
    let previousGrads: GradientSums
    private let store: ParameterStore

    init(_ scope: Scope, from previous: [Int], to current: [Int]) {
        store = scope.store
        previousCount = previous.count
        layers = current.indices.map { i in
            if i < previous.count {
                guard current[i] != previous[i] else { return [] }
                return [ConvBN(conv: scope.child("\(i).0"), bn: scope.child("\(i).1"), in: previous[i],
                               out: current[i], kernel: 3, padding: 1, relu: true)]
            }
            let steps = i + 1 - previous.count
            return (0..<steps).map { k in
                ConvBN(conv: scope.child("\(i).\(k).0"), bn: scope.child("\(i).\(k).1"), in: previous.last!,
                       out: k == steps - 1 ? current[i] : previous.last!, kernel: 3, stride: 2, padding: 1,
                       relu: true)
            }
        }
        previousGrads = GradientSums(count: previous.count)
    }

    /// The branch a transition reads: its own for a pass-through, else the previous stage's last (as mmseg,
    /// which validation makes equivalent for width-changing continuing branches).
    private func source(_ i: Int) -> Int { layers[i].isEmpty ? i : previousCount - 1 }

    /// Whose ReLU output each of this transition's outputs is: its last conv's BN, or for a pass-through the
    /// previous stage's producer of that branch.
    func producers(passingThrough previous: [KeepsOutputInBF16?]) -> [KeepsOutputInBF16?] {
        layers.indices.map { i in layers[i].last?.bn ?? previous[i] }
    }

    func forward(_ previous: [Tensor]) -> [Tensor] {
        layers.indices.map { i in
            forwardChain(layers[i], previous[source(i)], keepingBF16: store.keepsActivationsInBF16)
        }
    }

    func backward(_ grads: [Tensor]) -> [Tensor] {
        previousGrads.begin()
        for i in layers.indices {
            previousGrads.add(layers[i].reversed().reduce(grads[i]) { g, layer in layer.backward(g)! }, to: source(i))
        }
        return (0..<previousCount).map { previousGrads.result($0) }
    }
}

/// HRNetV2 (mmseg `HRNet`, multiscale output). Keys: `conv1`, `bn1`, `conv2`, `bn2` (stem), `layer1.*`,
/// `transition{1,2,3}.*`, `stage{2,3,4}.m.{branches,fuse_layers}.*`.
/// x: N×3×H×W → 4 branches N×C_i×H/2^(i+2)×W/2^(i+2) (ceil at odd sizes), C = `config.outChannels`.
final class HRNet {
    let stem: [ConvBN]
    let layer1: [ResidualBlock]
    let transitions: [Transition]
    let stages: [[HRModule]]
    private let store: ParameterStore

    init(_ scope: Scope, config: HRNetConfig, residualBNInit: Float) {
        store = scope.store
        // The stem width is fixed at 64 in mmseg, whatever the stage widths.
        stem = (1...2).map { i in
            ConvBN(conv: scope.child("conv\(i)"), bn: scope.child("bn\(i)"), in: i == 1 ? 3 : 64, out: 64, kernel: 3,
                   stride: 2, padding: 1, relu: true)
        }
        stem[0].conv.needsInputGradient = false
        let stage1 = config.stages[0]
        layer1 = (0..<stage1.numBlocks[0]).map { b in
            ResidualBlock(scope.child("layer1.\(b)"), inChannels: b == 0 ? 64 : stage1.branchChannels[0],
                          planes: stage1.numChannels[0], stride: 1, dilation: 1,
                          bottleneck: stage1.block == .bottleneck, residualBNInit: residualBNInit)
        }
        var channels = stage1.branchChannels
        var transitions: [Transition] = []
        var stages: [[HRModule]] = []
        for s in 1..<config.stages.count {
            let stage = config.stages[s]
            transitions.append(Transition(scope.child("transition\(s)"), from: channels, to: stage.branchChannels))
            channels = stage.branchChannels
            stages.append((0..<stage.numModules).map { m in
                HRModule(scope.child("stage\(s + 1).\(m)"), stage: stage, inChannels: channels,
                         residualBNInit: residualBNInit)
            })
        }
        self.transitions = transitions
        self.stages = stages
    }

    func forward(_ x: Tensor) -> [Tensor] {
        // In bf16 training the stem's outputs are kept as bf16 once read, the second's by layer1's first block.
        let h = ResidualBlock.forward(layer1, forwardChain(stem, x, keepingBF16: store.keepsActivationsInBF16),
                                      producer: stem[stem.count - 1].bn)
        var branches = [h]
        var producers: [KeepsOutputInBF16?] = [layer1[layer1.count - 1].join]
        for (transition, modules) in zip(transitions, stages) {
            branches = transition.forward(branches)
            producers = transition.producers(passingThrough: producers)
            for module in modules {
                branches = module.forward(branches, producers: producers)
                producers = module.sums
            }
        }
        return branches
    }

    /// Gradients w.r.t. the four outputs flow back to the stem; the image needs none.
    func backward(_ featureGrads: [Tensor?]) {
        var grads = featureGrads.enumerated().map { i, g -> Tensor in
            guard let g else { preconditionFailure("HRNet backward needs the gradient of every branch (missing \(i))") }
            return g
        }
        for (transition, modules) in zip(transitions, stages).reversed() {
            grads = transition.backward(modules.reversed().reduce(grads) { g, module in module.backward(g) })
        }
        var d = layer1.reversed().reduce(grads[0]) { g, block in block.backward(g) }
        for c in stem.reversed() {
            guard let next = c.backward(d) else { break }
            d = next
        }
    }
}

/// mmseg `input_transform='resize_concat'` over in_index (0, 1, 2, 3): every backbone output bilinearly resized
/// (align_corners as configured) to the first one's size and concatenated along channels.
/// [N×C_i×H_i×W_i] → N×ΣC_i×H_0×W_0.
final class ResizeConcat {
    let resizes: [BilinearResize]
    let concat = ChannelConcat()

    init(count: Int, alignCorners: Bool) {
        resizes = (0..<count).map { _ in BilinearResize(alignCorners: alignCorners) }
    }

    func forward(_ features: [Tensor]) -> Tensor {
        let (height, width) = (features[0].shape[2], features[0].shape[3])
        // Resizing to the same size is the identity at either align_corners, so the first input is used as is.
        return concat.forward(features.enumerated().map { i, f in
            i == 0 ? f : resizes[i].forward(f, height: height, width: width)
        })
    }

    func backward(_ dy: Tensor) -> [Tensor] {
        concat.backward(dy).enumerated().map { i, g in i == 0 ? g : resizes[i].backward(g) }
    }
}
